#!/usr/bin/env bash
# A real WordPress site for tests and the quickstart, from Debian's `wordpress`
# package, served by `php -S`.
#
#   wp-site.sh install DIR DB_HOST:PORT DB_NAME DB_USER DB_PASSWORD URL
#       copy WordPress into DIR, write its wp-config.php, install the site
#       into DB_NAME with demo posts, pages, options and an attachment
#   wp-site.sh config DIR DB_HOST:PORT DB_NAME DB_USER DB_PASSWORD
#       (re)write DIR/wp-config.php only (point a copy at a restored database)
#   wp-site.sh serve DIR HOST:PORT     serve DIR in the background; prints the pid
set -euo pipefail

cmd="${1:-}"; shift || true

write_config() {
  local dir="$1" host="$2" name="$3" user="$4" pass="$5"
  cat >"$dir/wp-config.php" <<PHP
<?php
define('DB_NAME', '$name');
define('DB_USER', '$user');
define('DB_PASSWORD', '$pass');
define('DB_HOST', '$host');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
define('AUTH_KEY', 'wpdr-demo'); define('SECURE_AUTH_KEY', 'wpdr-demo'); define('LOGGED_IN_KEY', 'wpdr-demo');
define('NONCE_KEY', 'wpdr-demo'); define('AUTH_SALT', 'wpdr-demo'); define('SECURE_AUTH_SALT', 'wpdr-demo');
define('LOGGED_IN_SALT', 'wpdr-demo'); define('NONCE_SALT', 'wpdr-demo');
define('DISABLE_WP_CRON', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
\$table_prefix = 'wp_';
if (!defined('ABSPATH')) { define('ABSPATH', __DIR__ . '/'); }
require_once ABSPATH . 'wp-settings.php';
PHP
}

case "$cmd" in
  install)
    dir="$1" host="$2" name="$3" user="$4" pass="$5" url="$6"
    [ -f /usr/share/wordpress/wp-load.php ] || { echo "Debian's wordpress package is missing (apt-get install wordpress)" >&2; exit 1; }
    rm -rf "$dir"; mkdir -p "$dir"
    # A real copy: PHP resolves symlinks, and a symlinked tree would load Debian's config.
    cp -rL /usr/share/wordpress/. "$dir/"
    write_config "$dir" "$host" "$name" "$user" "$pass"
    cat >"$dir/wpdr-install.php" <<'PHP'
<?php
$url = $argv[1];
$parts = parse_url($url);
$_SERVER['HTTP_HOST'] = $parts['host'] . (isset($parts['port']) ? ':' . $parts['port'] : '');
$_SERVER['REQUEST_URI'] = '/';
define('WP_INSTALLING', true);
require __DIR__ . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
wp_install('wpdr demo site', 'admin', 'admin@example.com', true, '', 'demo-password-not-secret');
update_option('siteurl', $url);
update_option('home', $url);
update_option('wpdr_demo_widget', array('title' => 'Visit us', 'url' => $url . '/contact/', 'nested' => array('logo' => $url . '/wp-content/uploads/logo.png')));
for ($i = 1; $i <= 12; $i++) {
  wp_insert_post(array(
    'post_title' => "Post $i: émoji 🎉 and quotes \"'",
    'post_content' => "<p>Body of post $i. Link: <a href=\"$url/post-$i/\">here</a>.</p>\n<!-- wp:paragraph --><p>Second paragraph ✓</p><!-- /wp:paragraph -->",
    'post_status' => 'publish',
    'post_date' => sprintf('2026-01-%02d 10:00:00', $i),
  ));
}
$att = wp_insert_attachment(array('post_title' => 'logo', 'post_mime_type' => 'image/png', 'post_status' => 'inherit', 'guid' => $url . '/wp-content/uploads/2026/01/logo.png'), '2026/01/logo.png');
update_post_meta($att, '_wp_attached_file', '2026/01/logo.png');
update_post_meta($att, '_wp_attachment_metadata', array('width' => 64, 'height' => 64, 'file' => '2026/01/logo.png', 'sizes' => array('thumbnail' => array('file' => 'logo-32x32.png', 'width' => 32, 'height' => 32, 'mime-type' => 'image/png'))));
wp_insert_comment(array('comment_post_ID' => 1, 'comment_author' => 'Ünïcode Reader', 'comment_content' => 'Great post — thanks!', 'comment_approved' => 1));
echo "installed $url\n";
PHP
    php "$dir/wpdr-install.php" "$url" 2>&1 | grep -v -i "sendmail" || true
    ;;
  config)
    write_config "$@"
    ;;
  serve)
    dir="$(cd "$1" && pwd)" addr="$2"
    (cd "$dir" && exec php -S "$addr" -t "$dir" >"$dir/php-server.log" 2>&1) &
    pid=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://$addr/" && break; sleep 0.1; done
    echo "$pid"
    ;;
  *)
    echo "usage: $0 install|config|serve ..." >&2; exit 2 ;;
esac
