#!/usr/bin/env bash
# Installs edged as a systemd service: binaries, unit, sysusers.d user,
# tmpfiles.d directories and a configuration file. Safe to run again: it
# updates the binaries, unit and snippets, never overwrites an existing
# edged.toml, and restarts a running service only when something changed.
#
# usage: systemd/install.sh [--prefix DIR] [--bin DIR] [--root DIR] [--enable]
#
#   --prefix DIR  where the binaries go: DIR/bin (default /usr/local)
#   --bin DIR     take edged and edgectl from DIR instead of building them
#                 (go build, from this checkout)
#   --root DIR    install under DIR (a staging tree) and change nothing on
#                 the running system
#   --enable      enable and start the service (systemctl enable --now)
set -euo pipefail

prefix=/usr/local
bin=""
root=""
enable=false
while [ $# -gt 0 ]; do
	case "$1" in
	--prefix) prefix=$2; shift 2 ;;
	--bin) bin=$2; shift 2 ;;
	--root) root=$2; shift 2 ;;
	--enable) enable=true; shift ;;
	-h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
	esac
done
case "$prefix" in
/*) ;;
*) echo "install.sh: --prefix must be absolute" >&2; exit 2 ;;
esac

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
live=false
if [ -z "$root" ]; then
	live=true
	if [ "$(id -u)" != 0 ]; then
		echo "install.sh: run as root (or stage with --root DIR)" >&2
		exit 1
	fi
fi

if [ -z "$bin" ]; then
	bin=$tmp/bin
	mkdir -p "$bin"
	echo "building edged and edgectl"
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -o "$bin/" ./cmd/edged ./cmd/edgectl)
fi
for b in edged edgectl; do
	if [ ! -x "$bin/$b" ]; then
		echo "install.sh: $bin/$b is missing or not executable" >&2
		exit 1
	fi
done

changed=false
# put SRC DEST MODE: installs SRC as DEST when the content differs.
put() {
	local src=$1 dest=$root$2 mode=$3
	if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
		return
	fi
	install -D -m "$mode" "$src" "$dest"
	echo "installed $2"
	changed=true
}

put "$bin/edged" "$prefix/bin/edged" 0755
put "$bin/edgectl" "$prefix/bin/edgectl" 0755

unit=$tmp/edged.service
sed "s|/usr/local/bin/edged|$prefix/bin/edged|" "$here/edged.service" >"$unit"
put "$unit" /etc/systemd/system/edged.service 0644
put "$here/edged.sysusers" /etc/sysusers.d/edged.conf 0644
put "$here/edged.tmpfiles" /etc/tmpfiles.d/edged.conf 0644

# The reference of every key (edged --example-config), refreshed each
# time; the live file is installed once and then left to the operator.
if "$bin/edged" --example-config >"$tmp/edged.example.toml" 2>/dev/null && [ -s "$tmp/edged.example.toml" ]; then
	put "$tmp/edged.example.toml" /etc/edged/edged.example.toml 0644
fi
if [ -e "$root/etc/edged/edged.toml" ]; then
	echo "kept /etc/edged/edged.toml"
else
	install -D -m 0644 "$here/edged.toml" "$root/etc/edged/edged.toml"
	echo "installed /etc/edged/edged.toml"
fi

if ! $live; then
	echo "staged under $root"
	exit 0
fi

# The user, then the directories it owns.
if command -v systemd-sysusers >/dev/null; then
	systemd-sysusers /etc/sysusers.d/edged.conf
elif ! getent passwd edged >/dev/null; then
	useradd --system --user-group --home-dir /var/lib/edged --shell /usr/sbin/nologin edged
fi
if command -v systemd-tmpfiles >/dev/null; then
	systemd-tmpfiles --create /etc/tmpfiles.d/edged.conf
fi

if [ ! -d /run/systemd/system ]; then
	echo "systemd is not running here: start edged with: systemctl enable --now edged"
	exit 0
fi
systemctl daemon-reload
if $enable; then
	systemctl enable --now edged.service
fi
if $changed && systemctl is-active --quiet edged.service; then
	systemctl try-restart edged.service
	echo "restarted edged"
fi
systemctl --no-pager --lines=0 status edged.service || true
echo "edgectl talks to /run/edged/edged.sock for members of group edged: usermod -aG edged USER"
