//! A directory as an object store. Keys map to relative paths. Objects are
//! written to a temporary name beside their final path, fsynced and renamed,
//! so readers only ever see whole objects.

use super::{ObjectMeta, StoreError};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READ_CHUNK: usize = 1 << 20;
const TEMP_MARK: &str = ".wpdr-partial-";

pub struct LocalStore {
    root: PathBuf,
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl LocalStore {
    pub async fn open(root: &Path) -> Result<Self, StoreError> {
        tokio::fs::create_dir_all(root)
            .await
            .map_err(|e| io_err(root, e))?;
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        let path = self.path(key);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_err(parent, e))?;
        }
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(mut f) => {
                f.write_all(&data).await.map_err(|e| io_err(&path, e))?;
                f.sync_all().await.map_err(|e| io_err(&path, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub async fn reader(&self, key: &str) -> Result<LocalReader, StoreError> {
        let path = self.path(key);
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(LocalReader { file, path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let path = self.path(key);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// Walks the directory under `prefix`. Temporary files of unfinished writes are not objects.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Start from the deepest directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let mut stack = vec![self.root.join(dir_part)];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, e)),
            };
            while let Some(entry) = rd.next_entry().await.map_err(|e| io_err(&dir, e))? {
                let path = entry.path();
                let ft = entry.file_type().await.map_err(|e| io_err(&path, e))?;
                if ft.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&self.root) else {
                    continue;
                };
                let key = rel.to_string_lossy().replace('\\', "/");
                if key.starts_with(prefix) && !key.contains(TEMP_MARK) {
                    let size = entry.metadata().await.map_err(|e| io_err(&path, e))?.len();
                    out.push(ObjectMeta { key, size });
                }
            }
        }
        Ok(out)
    }

    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let mut out = Vec::new();
        let mut rd = match tokio::fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&dir, e)),
        };
        while let Some(entry) = rd.next_entry().await.map_err(|e| io_err(&dir, e))? {
            if entry
                .file_type()
                .await
                .map_err(|e| io_err(&entry.path(), e))?
                .is_dir()
            {
                out.push(format!("{prefix}{}/", entry.file_name().to_string_lossy()));
            }
        }
        Ok(out)
    }

    /// Removes the directory a prefix names, with anything left in it.
    pub async fn remove_dir(&self, prefix: &str) -> Result<(), StoreError> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        if dir == self.root {
            return Ok(());
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&dir, e)),
        }
    }

    pub fn writer(&self, key: &str) -> LocalWriter {
        let final_path = self.path(key);
        let temp = {
            let name = final_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            final_path.with_file_name(format!("{name}{TEMP_MARK}{:016x}", rand::random::<u64>()))
        };
        LocalWriter {
            final_path,
            temp,
            file: None,
        }
    }
}

pub struct LocalReader {
    file: tokio::fs::File,
    path: PathBuf,
}

impl LocalReader {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = self
            .file
            .read(&mut buf)
            .await
            .map_err(|e| io_err(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(Bytes::from(buf)))
    }
}

pub struct LocalWriter {
    final_path: PathBuf,
    temp: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

impl LocalWriter {
    async fn open(&mut self) -> Result<&mut tokio::io::BufWriter<tokio::fs::File>, StoreError> {
        if self.file.is_none() {
            if let Some(parent) = self.temp.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io_err(parent, e))?;
            }
            let f = tokio::fs::File::create(&self.temp)
                .await
                .map_err(|e| io_err(&self.temp, e))?;
            self.file = Some(tokio::io::BufWriter::with_capacity(1 << 20, f));
        }
        match self.file.as_mut() {
            Some(f) => Ok(f),
            None => unreachable!("file was opened above"),
        }
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let temp = self.temp.clone();
        let f = self.open().await?;
        f.write_all(data).await.map_err(|e| io_err(&temp, e))
    }

    pub async fn finish(mut self) -> Result<(), StoreError> {
        let temp = self.temp.clone();
        let f = self.open().await?;
        f.flush().await.map_err(|e| io_err(&temp, e))?;
        f.get_ref().sync_all().await.map_err(|e| io_err(&temp, e))?;
        self.file = None;
        tokio::fs::rename(&self.temp, &self.final_path)
            .await
            .map_err(|e| io_err(&self.final_path, e))?;
        // Make the rename itself durable.
        if let Some(parent) = self.final_path.parent() {
            if let Ok(d) = tokio::fs::File::open(parent).await {
                let _ = d.sync_all().await;
            }
        }
        Ok(())
    }

    pub async fn abort(mut self) {
        self.file = None;
        let _ = tokio::fs::remove_file(&self.temp).await;
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
