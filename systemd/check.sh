#!/usr/bin/env bash
# Checks systemd/: stages an install with install.sh into a temporary root
# (stub binaries), then runs systemd-analyze verify on the unit,
# systemd-analyze security --offline=true (fails above an exposure of
# $EDGED_MAX_EXPOSURE, default 2.0; "OK" is below 5), checks the sysusers.d
# and tmpfiles.d snippets with their tools, and that a second install
# changes nothing.
#
# usage: systemd/check.sh   (installs Debian's systemd package if
#                            systemd-analyze is missing and we are root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
max=${EDGED_MAX_EXPOSURE:-2.0}

if ! command -v systemd-analyze >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
	else
		echo "check.sh: systemd-analyze is missing (apt-get install systemd)" >&2
		exit 1
	fi
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
stubs=$root.stubs
mkdir -p "$stubs"
trap 'rm -rf "$root" "$stubs"' EXIT
for b in edged edgectl; do
	printf '#!/bin/sh\nexit 0\n' >"$stubs/$b"
	chmod +x "$stubs/$b"
done

echo "== install.sh --root (twice)"
"$here/install.sh" --root "$root" --bin "$stubs" >/dev/null
before=$(cd "$root" && find . -type f -exec sha256sum {} + | sort)
second=$("$here/install.sh" --root "$root" --bin "$stubs")
after=$(cd "$root" && find . -type f -exec sha256sum {} + | sort)
if [ "$before" != "$after" ] || echo "$second" | grep -q '^installed'; then
	echo "FAIL: the second install changed something:" >&2
	echo "$second" >&2
	exit 1
fi
for f in usr/local/bin/edged usr/local/bin/edgectl etc/systemd/system/edged.service \
	etc/sysusers.d/edged.conf etc/tmpfiles.d/edged.conf etc/edged/edged.toml; do
	[ -f "$root/$f" ] || { echo "FAIL: install.sh did not install /$f" >&2; exit 1; }
done

# verify resolves the unit's dependencies (sysinit.target, …) and the
# ExecStart binary inside the root.
mkdir -p "$root/usr/lib/systemd"
for d in /usr/lib/systemd/system /lib/systemd/system; do
	if [ -d "$d" ]; then
		cp -r "$d" "$root/usr/lib/systemd/"
		break
	fi
done
mkdir -p "$root/bin"
cp "$(type -P kill)" "$root/bin/kill"

echo "== systemd-analyze verify"
out=$(systemd-analyze verify --root="$root" --man=no edged.service 2>&1) || {
	echo "$out" >&2
	echo "FAIL: systemd-analyze verify" >&2
	exit 1
}
if [ -n "$out" ]; then
	echo "$out"
	echo "FAIL: systemd-analyze verify warned" >&2
	exit 1
fi
echo "ok"

echo "== systemd-analyze security --offline=true"
threshold=$(awk -v m="$max" 'BEGIN { printf "%d", m * 10 }')
out=$(systemd-analyze security --offline=true --root="$root" --threshold="$threshold" --no-pager edged.service 2>&1) || {
	echo "$out" | grep -v '✓' >&2
	echo "FAIL: exposure above $max" >&2
	exit 1
}
echo "$out" | grep -v '✓'

echo "== systemd-sysusers, systemd-tmpfiles"
if command -v systemd-sysusers >/dev/null; then
	mkdir -p "$root/etc"
	touch "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow"
	systemd-sysusers --root="$root" "$root/etc/sysusers.d/edged.conf"
	grep -q '^edged:' "$root/etc/passwd" || { echo "FAIL: sysusers made no user edged" >&2; exit 1; }
	echo "user: $(grep '^edged:' "$root/etc/passwd")"
fi
if command -v systemd-tmpfiles >/dev/null; then
	systemd-tmpfiles --root="$root" --create "$root/etc/tmpfiles.d/edged.conf"
	for d in var/lib/edged var/cache/edged; do
		[ -d "$root/$d" ] || { echo "FAIL: tmpfiles made no /$d" >&2; exit 1; }
	done
	echo "directories: $(cd "$root" && stat -c '%A %u:%g %n' var/lib/edged var/cache/edged | tr '\n' ' ')"
fi
echo "systemd check passed"
