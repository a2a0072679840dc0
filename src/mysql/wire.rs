//! A lean text-protocol client for the dump's row reads.
//!
//! Why: through the driver every value of every row arrives as its own
//! `Vec` inside a `Row` (a quarter of a backup's client CPU, measured); the
//! driver's packet reader is private to it. Here a connection reads the
//! server's bytes into one buffer and hands each row out as slices of it:
//! rows are rendered, escaped and hashed where they landed, with no copy and
//! no allocation per value.
//!
//! Scope: TCP (with TLS as `database.tls` says, see `mysql::tls`) or a Unix
//! socket, `mysql_native_password` or `caching_sha2_password`'s fast path,
//! `COM_QUERY` and text result sets. Anything else (other authentication
//! plugins) is the driver's: the caller falls back to it when
//! [`WireConn::connect`] refuses.

use crate::config::{Endpoint, TlsMode};
use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthPlugin, AuthSwitchRequest, Column, ErrPacket, HandshakePacket, HandshakeResponse,
    SslRequest,
};
use mysql_common::proto::MySerialize;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Packets of this payload length continue in the next packet.
const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// What the socket is read into: large enough for many rows a read.
const READ_BUFFER: usize = 512 * 1024;
/// The least room a read is given.
const MIN_READ: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The collation the SSL request names (`SET NAMES utf8mb4` follows).
const UTF8MB4_GENERAL_CI: u8 = 45;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("ERROR {code} ({state}): {message}")]
    Server {
        code: u16,
        state: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The connection needs what only the driver does (TLS, an
    /// authentication plugin not handled here): use the driver.
    #[error("{0}")]
    Unsupported(String),
}

impl From<WireError> for mysql_async::Error {
    /// Server errors keep their code, so the callers' classification
    /// (a table dropped or rebuilt since the snapshot) is the driver's.
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io(io) => mysql_async::Error::Io(mysql_async::IoError::Io(io)),
            WireError::Server {
                code,
                state,
                message,
            } => mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message,
                state,
            }),
            other => mysql_async::Error::Other(Box::new(other)),
        }
    }
}

trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// One connection. Not usable again after an error in the middle of a
/// result (the caller drops it).
pub struct WireConn {
    stream: Box<dyn Duplex>,
    /// Bytes read from the socket; `start..` not yet consumed.
    inbuf: Vec<u8>,
    start: usize,
    /// A packet longer than one frame, joined (rare: values over 16 MiB).
    joined: Vec<u8>,
    seq: u8,
    capabilities: CapabilityFlags,
    /// A result set was left unread: the next command would read its rows.
    broken: bool,
}

impl std::fmt::Debug for WireConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConn")
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// A statement's first answer.
enum Head {
    Done { more: bool },
    Rows(Vec<Column>),
}

/// Where a packet's payload is: in the read buffer or joined.
#[derive(Clone, Copy)]
enum Payload {
    Buffered { from: usize, to: usize },
    Joined,
}

impl WireConn {
    /// Connects and authenticates as the driver's connections do (same
    /// TLS checks, same session settings). Refuses with
    /// [`WireError::Unsupported`] where TLS is required and the server offers
    /// none, or the server asks for an unhandled plugin.
    pub async fn connect(endpoint: &Endpoint, database: Option<&str>) -> Result<Self, WireError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::connect_inner(endpoint, database)).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within 15 s",
            ))),
        }
    }

    async fn connect_inner(endpoint: &Endpoint, database: Option<&str>) -> Result<Self, WireError> {
        let stream: Box<dyn Duplex> = match &endpoint.socket {
            Some(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            None => {
                let tcp =
                    tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
                tcp.set_nodelay(true)?;
                Box::new(tcp)
            }
        };
        let mut conn = WireConn {
            stream,
            inbuf: Vec::with_capacity(READ_BUFFER),
            start: 0,
            joined: Vec::new(),
            seq: 0,
            capabilities: CapabilityFlags::empty(),
            broken: false,
        };
        conn.handshake(endpoint, database).await?;
        conn.exec("SET NAMES utf8mb4").await?;
        conn.exec("SET time_zone = '+00:00'").await?;
        conn.exec("SET SESSION wait_timeout = 28800").await?;
        Ok(conn)
    }

    async fn handshake(
        &mut self,
        endpoint: &Endpoint,
        database: Option<&str>,
    ) -> Result<(), WireError> {
        let payload = self.read_packet().await?;
        let bytes = self.payload(payload);
        if bytes.first() == Some(&0xFF) {
            return Err(server_error(bytes, CapabilityFlags::empty()));
        }
        let hs: HandshakePacket<'_> = ParseBuf(bytes)
            .parse(())
            .map_err(|e| WireError::Protocol(format!("handshake: {e}")))?;
        let mut nonce = hs.scramble_1_ref().to_vec();
        nonce.extend_from_slice(hs.scramble_2_ref().unwrap_or_default());
        nonce.resize(20, 0);
        let wanted = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_TRANSACTIONS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let mut capabilities = hs.capabilities() & wanted;
        if !capabilities.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
            return Err(WireError::Unsupported(
                "the server does not speak protocol 4.1".into(),
            ));
        }
        let offers_tls = hs.capabilities().contains(CapabilityFlags::CLIENT_SSL);
        let version = hs
            .maria_db_server_version_parsed()
            .or_else(|| hs.server_version_parsed())
            .unwrap_or((0, 0, 0));
        let mut plugin = match hs.auth_plugin() {
            Some(AuthPlugin::CachingSha2Password) => AuthPlugin::CachingSha2Password,
            _ => AuthPlugin::MysqlNativePassword,
        };
        if !endpoint.connects_plain() {
            if offers_tls {
                let (connector, name) = super::tls::connector(endpoint)
                    .map_err(|e| WireError::Unsupported(e.to_string()))?;
                // The server keeps the SSL request's capabilities: they must
                // be the handshake response's.
                capabilities |= CapabilityFlags::CLIENT_SSL;
                if database.is_some() {
                    capabilities |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
                }
                self.start_tls(capabilities, connector, name).await?;
            } else if endpoint.tls.mode != TlsMode::Preferred {
                // A mode that requires TLS is the driver's to refuse with its
                // message; `preferred` goes on in the clear.
                return Err(WireError::Unsupported(
                    "TLS is required and the server offers none".into(),
                ));
            }
        }
        self.capabilities = capabilities;
        let password = endpoint.password.expose();
        let password = (!password.is_empty()).then_some(password);
        let data = plugin.gen_data(password, &nonce);
        let response = HandshakeResponse::new(
            data.as_deref(),
            version,
            Some(endpoint.user.as_bytes()),
            database.map(str::as_bytes),
            Some(plugin.borrow()),
            capabilities,
            None,
            1 << 30,
        );
        let mut out = Vec::new();
        response.serialize(&mut out);
        self.write_packet(&out).await?;
        let mut switched = false;
        loop {
            let p = self.read_packet().await?;
            let bytes = self.payload(p);
            match bytes.first() {
                Some(0x00) => return Ok(()),
                Some(0xFF) => return Err(server_error(bytes, self.capabilities)),
                Some(0xFE) if !switched && bytes.len() > 1 => {
                    switched = true;
                    let req: AuthSwitchRequest<'_> = ParseBuf(bytes)
                        .parse(())
                        .map_err(|e| WireError::Protocol(format!("auth switch: {e}")))?;
                    plugin = match req.auth_plugin() {
                        AuthPlugin::MysqlNativePassword => AuthPlugin::MysqlNativePassword,
                        AuthPlugin::CachingSha2Password => AuthPlugin::CachingSha2Password,
                        other => {
                            return Err(WireError::Unsupported(format!(
                                "authentication plugin {}",
                                String::from_utf8_lossy(other.as_bytes())
                            )))
                        }
                    };
                    let mut nonce = req.plugin_data().to_vec();
                    // The plugin data ends in a NUL that is not the nonce's.
                    if nonce.len() > 20 {
                        nonce.truncate(20);
                    }
                    let mut out = Vec::new();
                    if let Some(d) = plugin.gen_data(password, &nonce) {
                        d.serialize(&mut out);
                    }
                    self.write_packet(&out).await?;
                }
                // caching_sha2_password: 0x01 0x03 is the fast path's
                // success (an OK follows); 0x04 asks for the full exchange
                // (MySQL only, first login after a restart): the driver's.
                Some(0x01) if plugin == AuthPlugin::CachingSha2Password => {
                    if bytes.get(1) != Some(&0x03) {
                        return Err(WireError::Unsupported(
                            "caching_sha2_password full authentication".into(),
                        ));
                    }
                }
                _ => {
                    return Err(WireError::Protocol(format!(
                        "authentication answer starting {:?}",
                        bytes.first()
                    )))
                }
            }
        }
    }

    /// Asks for TLS (the SSL request in place of the handshake response)
    /// and goes on over it; the handshake response follows encrypted.
    async fn start_tls(
        &mut self,
        capabilities: CapabilityFlags,
        connector: tokio_rustls::TlsConnector,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<(), WireError> {
        if self.inbuf.len() != self.start {
            return Err(WireError::Protocol("bytes after the handshake".into()));
        }
        let mut out = Vec::new();
        SslRequest::new(capabilities, 1 << 30, UTF8MB4_GENERAL_CI).serialize(&mut out);
        self.write_packet(&out).await?;
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
        let secured = connector.connect(name, plain).await?;
        self.stream = Box::new(secured);
        Ok(())
    }

    fn payload(&self, p: Payload) -> &[u8] {
        match p {
            Payload::Buffered { from, to } => &self.inbuf[from..to],
            Payload::Joined => &self.joined,
        }
    }

    /// Reads until at least `n` unconsumed bytes are buffered. Each read
    /// has room for at least [`MIN_READ`] bytes (what is left unconsumed
    /// moves to the front first), so rows never arrive a few bytes a call.
    async fn fill(&mut self, n: usize) -> Result<(), WireError> {
        while self.inbuf.len() - self.start < n {
            let room = (n - (self.inbuf.len() - self.start)).max(MIN_READ);
            if self.inbuf.capacity() - self.inbuf.len() < room {
                if self.start > 0 {
                    self.inbuf.drain(..self.start);
                    self.start = 0;
                }
                if self.inbuf.capacity() - self.inbuf.len() < room {
                    self.inbuf.reserve(room.max(READ_BUFFER));
                }
            }
            let read = self.stream.read_buf(&mut self.inbuf).await?;
            if read == 0 {
                return Err(WireError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
        Ok(())
    }

    /// The next packet's payload (joined when it spans frames). Consumes it:
    /// its bytes stay valid until the next read.
    async fn read_packet(&mut self) -> Result<Payload, WireError> {
        let mut joining = false;
        loop {
            self.fill(4).await?;
            let h = &self.inbuf[self.start..self.start + 4];
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            self.seq = h[3].wrapping_add(1);
            self.fill(4 + len).await?;
            let from = self.start + 4;
            let to = from + len;
            self.start = to;
            if !joining && len < MAX_PAYLOAD {
                return Ok(Payload::Buffered { from, to });
            }
            if !joining {
                self.joined.clear();
                joining = true;
            }
            self.joined.extend_from_slice(&self.inbuf[from..to]);
            if len < MAX_PAYLOAD {
                return Ok(Payload::Joined);
            }
        }
    }

    async fn write_packet(&mut self, payload: &[u8]) -> Result<(), WireError> {
        let mut out = Vec::with_capacity(payload.len() + 8);
        let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
        // An exact multiple of the frame size ends with an empty frame.
        let empty_tail = payload.len() % MAX_PAYLOAD == 0;
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let len = chunk.len();
            out.extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, self.seq]);
            out.extend_from_slice(chunk);
            self.seq = self.seq.wrapping_add(1);
            if chunks.peek().is_none() && !(empty_tail && len == MAX_PAYLOAD) {
                break;
            }
        }
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn command(&mut self, sql: &str) -> Result<(), WireError> {
        if self.broken {
            return Err(WireError::Protocol(
                "the connection was left in the middle of a result".into(),
            ));
        }
        self.seq = 0;
        let mut out = Vec::with_capacity(sql.len() + 1);
        out.push(0x03); // COM_QUERY
        out.extend_from_slice(sql.as_bytes());
        self.write_packet(&out).await
    }

    /// Reads a statement's (or a further result's) first answer.
    async fn result_head(&mut self) -> Result<Head, WireError> {
        let p = self.read_packet().await?;
        let bytes = self.payload(p);
        match bytes.first() {
            Some(0x00) => Ok(Head::Done {
                more: self.more_results(p, false),
            }),
            Some(0xFF) => Err(server_error(bytes, self.capabilities)),
            Some(0xFB) => Err(WireError::Protocol("a LOCAL INFILE request".into())),
            _ => {
                let count = lenenc(bytes, &mut 0)
                    .ok_or_else(|| WireError::Protocol("no column count".into()))?;
                let mut columns = Vec::with_capacity(count.min(4096) as usize);
                for _ in 0..count {
                    let p = self.read_packet().await?;
                    let col: Column = ParseBuf(self.payload(p))
                        .parse(())
                        .map_err(|e| WireError::Protocol(format!("column definition: {e}")))?;
                    columns.push(col);
                }
                if !self
                    .capabilities
                    .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
                {
                    self.read_packet().await?; // the EOF after the columns
                }
                Ok(Head::Rows(columns))
            }
        }
    }

    /// Whether an OK or end-of-rows packet says more results follow.
    fn more_results(&self, p: Payload, terminator: bool) -> bool {
        let bytes = self.payload(p);
        let status = if terminator
            && !self
                .capabilities
                .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
        {
            // Old EOF: 0xFE, warnings (2), status (2).
            bytes.get(3..5).map(|s| u16::from_le_bytes([s[0], s[1]]))
        } else {
            // OK: header, affected rows, last insert id, status (2).
            let mut at = 1;
            lenenc(bytes, &mut at)
                .and_then(|_| lenenc(bytes, &mut at))
                .and_then(|_| bytes.get(at..at + 2))
                .map(|s| u16::from_le_bytes([s[0], s[1]]))
        };
        status.is_some_and(|s| {
            StatusFlags::from_bits_truncate(s).contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
        })
    }

    /// Runs a statement, reading past any rows it returns.
    pub async fn exec(&mut self, sql: &str) -> Result<(), WireError> {
        self.query_rows(sql).await.map(|_| ())
    }

    /// Runs a statement and returns its rows (for small results).
    pub async fn query_rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<Vec<u8>>>>, WireError> {
        let mut stream = self.query(sql).await?;
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await? {
            let mut values = row.values();
            rows.push(values.by_ref().map(|v| v.map(<[u8]>::to_vec)).collect());
            values.finish()?;
        }
        Ok(rows)
    }

    /// Runs a query and streams its rows (the first result's; results
    /// without rows before it, as from a procedure, are read past).
    pub async fn query(&mut self, sql: &str) -> Result<RowStream<'_>, WireError> {
        self.command(sql).await?;
        self.broken = true;
        let columns = match self.next_rows().await? {
            Some(columns) => columns,
            None => {
                self.broken = false;
                Vec::new()
            }
        };
        let done = columns.is_empty() && !self.broken;
        Ok(RowStream {
            conn: self,
            columns,
            done,
        })
    }

    /// Reads result heads until one with rows (its columns) or the last.
    async fn next_rows(&mut self) -> Result<Option<Vec<Column>>, WireError> {
        loop {
            match self.result_head().await? {
                Head::Rows(columns) => return Ok(Some(columns)),
                Head::Done { more: true } => continue,
                Head::Done { more: false } => return Ok(None),
            }
        }
    }

    pub async fn disconnect(mut self) {
        self.seq = 0;
        let _ = self.write_packet(&[0x01]).await; // COM_QUIT
        let _ = self.stream.shutdown().await;
    }
}

/// The rows of one result, read as they arrive.
pub struct RowStream<'c> {
    conn: &'c mut WireConn,
    columns: Vec<Column>,
    done: bool,
}

impl RowStream<'_> {
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The next row, borrowed from the connection's buffer until the next call.
    pub async fn next(&mut self) -> Result<Option<RawRow<'_>>, WireError> {
        let p = loop {
            if self.done {
                return Ok(None);
            }
            let p = self.conn.read_packet().await?;
            let (first, len) = {
                let b = self.conn.payload(p);
                (b.first().copied(), b.len())
            };
            match first {
                Some(0xFE) if len < MAX_PAYLOAD => {
                    // The end of the rows; a further result (a procedure's)
                    // is read on.
                    if self.conn.more_results(p, true) {
                        if let Some(columns) = self.conn.next_rows().await? {
                            self.columns = columns;
                            continue;
                        }
                    }
                    self.done = true;
                    self.conn.broken = false;
                    return Ok(None);
                }
                Some(0xFF) => {
                    self.done = true;
                    self.conn.broken = false;
                    return Err(server_error(self.conn.payload(p), self.conn.capabilities));
                }
                _ => break p,
            }
        };
        Ok(Some(RawRow {
            bytes: self.conn.payload(p),
            columns: self.columns.len(),
        }))
    }
}

/// One text-protocol row: each value length-prefixed, NULL as 0xFB.
pub struct RawRow<'a> {
    bytes: &'a [u8],
    columns: usize,
}

impl<'a> RawRow<'a> {
    /// The values in column order (`None` for NULL). A malformed row yields
    /// fewer values than columns: [`Values::finish`] says so.
    pub fn values(&self) -> Values<'a> {
        Values {
            bytes: self.bytes,
            at: 0,
            left: self.columns,
        }
    }
}

/// A row's values, walked once: by whoever renders or hashes them, who then
/// asks [`Values::finish`] whether the row was whole.
#[derive(Clone)]
pub struct Values<'a> {
    bytes: &'a [u8],
    at: usize,
    left: usize,
}

impl Values<'_> {
    /// After the values were read: whether there were exactly the columns'
    /// values and nothing after them.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.left != 0 {
            return Err(WireError::Protocol("a row shorter than its columns".into()));
        }
        if self.at != self.bytes.len() {
            return Err(WireError::Protocol("a row longer than its columns".into()));
        }
        Ok(())
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = Option<&'a [u8]>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let value = if self.bytes.get(self.at) == Some(&0xFB) {
            self.at += 1;
            None
        } else {
            let len = lenenc(self.bytes, &mut self.at)? as usize;
            let v = self.bytes.get(self.at..self.at.checked_add(len)?)?;
            self.at += len;
            Some(v)
        };
        // Counted only once read: a cut row leaves `left` above zero.
        self.left -= 1;
        Some(value)
    }
}

/// A length-encoded integer at `*at`, advancing past it.
fn lenenc(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let first = *bytes.get(*at)?;
    let (n, width) = match first {
        0..=0xFA => (u64::from(first), 0),
        0xFC => (0, 2),
        0xFD => (0, 3),
        0xFE => (0, 8),
        _ => return None,
    };
    if width == 0 {
        *at += 1;
        return Some(n);
    }
    let b = bytes.get(*at + 1..*at + 1 + width)?;
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate() {
        v |= u64::from(*byte) << (8 * i);
    }
    *at += 1 + width;
    Some(v)
}

fn server_error(bytes: &[u8], capabilities: CapabilityFlags) -> WireError {
    match ParseBuf(bytes).parse::<ErrPacket<'_>>(capabilities) {
        Ok(ErrPacket::Error(se)) => WireError::Server {
            code: se.error_code(),
            state: se
                .sql_state_ref()
                .map(|s| s.as_str().into_owned())
                .unwrap_or_default(),
            message: se.message_str().into_owned(),
        },
        Ok(ErrPacket::Progress(_)) => WireError::Protocol("a progress report".into()),
        Err(e) => WireError::Protocol(format!("error packet: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A row as the server writes it in the text protocol.
    fn encode(values: &[Option<Vec<u8>>]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            match v {
                None => out.push(0xFB),
                Some(b) => {
                    let n = b.len() as u64;
                    match n {
                        0..=0xFA => out.push(n as u8),
                        0xFB..=0xFFFF => {
                            out.push(0xFC);
                            out.extend_from_slice(&(n as u16).to_le_bytes());
                        }
                        0x1_0000..=0xFF_FFFF => {
                            out.push(0xFD);
                            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
                        }
                        _ => {
                            out.push(0xFE);
                            out.extend_from_slice(&n.to_le_bytes());
                        }
                    }
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn rows_read_back_value_by_value(
            values in prop::collection::vec(
                prop::option::of(prop::collection::vec(any::<u8>(), 0..300)),
                0..12,
            )
        ) {
            let bytes = encode(&values);
            let row = RawRow { bytes: &bytes, columns: values.len() };
            let mut walk = row.values();
            let read: Vec<Option<Vec<u8>>> = walk.by_ref().map(|v| v.map(<[u8]>::to_vec)).collect();
            prop_assert!(walk.finish().is_ok());
            prop_assert_eq!(read, values);
        }

        #[test]
        fn a_cut_row_is_named_not_misread(
            values in prop::collection::vec(
                prop::option::of(prop::collection::vec(any::<u8>(), 1..300)),
                1..8,
            ),
            cut in 1usize..64,
        ) {
            let bytes = encode(&values);
            let cut = cut.min(bytes.len());
            let short = &bytes[..bytes.len() - cut];
            let row = RawRow { bytes: short, columns: values.len() };
            let mut walk = row.values();
            walk.by_ref().for_each(drop);
            prop_assert!(walk.finish().is_err());
            // Bytes after the last column's value: a row longer than its columns.
            let mut long = bytes.clone();
            long.extend_from_slice(&bytes[..cut]);
            let row = RawRow { bytes: &long, columns: values.len() };
            let mut walk = row.values();
            walk.by_ref().for_each(drop);
            prop_assert!(walk.finish().is_err());
        }
    }

    #[test]
    fn length_prefixes_of_every_width() {
        for (bytes, want, width) in [
            (&[0xFAu8][..], 250u64, 1usize),
            (&[0xFC, 0x34, 0x12][..], 0x1234, 3),
            (&[0xFD, 0x56, 0x34, 0x12][..], 0x12_3456, 4),
            (&[0xFE, 1, 0, 0, 0, 1, 0, 0, 0][..], 0x1_0000_0001, 9),
        ] {
            let mut at = 0;
            assert_eq!(lenenc(bytes, &mut at), Some(want));
            assert_eq!(at, width);
        }
        // NULL and the error marker are not lengths; a cut prefix is none.
        assert_eq!(lenenc(&[0xFB], &mut 0), None);
        assert_eq!(lenenc(&[0xFF], &mut 0), None);
        assert_eq!(lenenc(&[0xFC, 1], &mut 0), None);
    }
}
