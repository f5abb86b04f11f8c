#!/usr/bin/env bash
# Runs quant's Go tests on an emulated AVX-512 + VNNI CPU, so that the
# AVX-512 kernel tier is tested on machines (and CI runners) without one.
#
# QEMU's TCG emulates no AVX-512, but Bochs (Debian's bochs 2.7 is built
# with EVEX support) has Ice Lake and Tiger Lake CPU models. This script
# builds the quant test binary and a small /init (init.go) statically, packs
# them into an initramfs, boots Debian's kernel from an ISOLINUX CD under
# Bochs with the console on the serial port, and waits for init to report
# the tests' exit status. It exits 0 only if that status is 0 and the
# output has a PASS line and no FAIL line.
#
# usage: tests/avx512/check.sh [options] [--] [test binary flags]
#   --tier NAME         EDGED_CPU_KERNELS and EDGED_WANT_CPU_KERNELS in the
#                       guest: picks that tier, and TestKernelFor fails if
#                       it was not picked (default avx512vnni; '' for none)
#   --cpu MODEL         Bochs CPU model (default tigerlake; corei7_icelake_u)
#   --timeout SECS      wall-clock limit for the whole run (default 1200)
#   --mem MB            guest memory (default 1024)
#   --test-binary FILE  run this static test binary instead of quant's
#                       (built with GOEXPERIMENT=nogreenteagc: see build_initrd)
#   --append ARGS       more kernel parameters (loglevel=7 shows the boot)
#   e.g. tests/avx512/check.sh -test.run 'TestDot$|TestTile' -test.v
#
# The test binary runs with cwd / and no files: pick tests that need none
# with -test.run. The kernel hands the words after "--" on its command line
# to init: at most about 30, none with a double quote. Guest time runs on
# emulated instructions (clock: sync=none), several times slower than wall
# time, and -test.timeout is in guest time. Needs bochs, bochs-sdl,
# bochsbios, vgabios, isolinux, syslinux-common, genisoimage, python3 and Go;
# installs the packages with apt-get if missing and root, and caches
# Debian's kernel under ${XDG_CACHE_HOME:-$HOME/.cache}/edged-avx512.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/edged-avx512
plugins=/usr/lib/x86_64-linux-gnu/bochs/plugins

tier=avx512vnni
cpu_model=tigerlake
timeout=1200
mem=1024
test_bin=
append=
tmp=
bochs_pid=

# Bochs 2.7 bugs that Debian's 6.1 kernel trips over, worked around with
# clearcpuid= (cpufeatures.h bit numbers; names need a newer kernel):
#  - CPUID leaf 0xD reports no size or offset for PKRU (an #if typo), so the
#    kernel finds the XSAVE layout inconsistent and disables XSAVE, AVX
#    included: clear pku (515) and ospke (516);
#  - leaf 0xD.1 reports the standard size for the compacted format, the
#    same: clear xsavec (321) and xsaves (323);
#  - MSR_IA32_MISC_ENABLE has fast strings off, so the kernel clears ERMS
#    but keeps FSRM, and 6.1's memmove (FSRM without ERMS) loses its length
#    check and runs off the end of memory at boot: clear fsrm (580).
workarounds="clearcpuid=321,323,515,516,580"

die() { echo "avx512: $*" >&2; exit 1; }
say() { echo "avx512: $*" >&2; }

cleanup() {
	if [ -n "$bochs_pid" ]; then
		kill "$bochs_pid" 2>/dev/null || true
		wait "$bochs_pid" 2>/dev/null || true
	fi
	if [ -n "$tmp" ]; then rm -rf "$tmp"; fi
}

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--tier) tier=$2; shift 2 ;;
		--cpu) cpu_model=$2; shift 2 ;;
		--timeout) timeout=$2; shift 2 ;;
		--mem) mem=$2; shift 2 ;;
		--test-binary) test_bin=$(realpath "$2"); shift 2 ;;
		--append) append=$2; shift 2 ;;
		--help | -h) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		--) shift; break ;;
		*) break ;;
		esac
	done
	test_args=("$@")
}

# install_tools installs the Debian packages that are missing, as root.
install_tools() {
	local missing=()
	command -v bochs >/dev/null || missing+=(bochs)
	# Debian builds no "nogui" display: SDL2 with SDL's dummy video driver.
	[ -f "$plugins/libbx_sdl2_gui.so" ] || missing+=(bochs-sdl)
	[ -f /usr/share/bochs/BIOS-bochs-latest ] || missing+=(bochsbios)
	[ -f /usr/share/vgabios/vgabios.bin ] || missing+=(vgabios)
	[ -f /usr/lib/ISOLINUX/isolinux.bin ] || missing+=(isolinux)
	[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || missing+=(syslinux-common)
	command -v genisoimage >/dev/null || missing+=(genisoimage)
	[ ${#missing[@]} -eq 0 ] && return
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		die "missing: apt-get install ${missing[*]}"
	fi
	say "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# fetch_kernel prints the path of Debian's current amd64 kernel image,
# downloading the package that linux-image-amd64 depends on if it is not
# cached yet.
fetch_kernel() {
	local pkg vmlinuz dl
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
	if [ -z "$pkg" ]; then
		# No package lists (apt-get update): take a cached kernel.
		vmlinuz=$(find "$cache" -name 'linux-image-*.vmlinuz' 2>/dev/null | sort -V | tail -n1)
		[ -n "$vmlinuz" ] || die "cannot resolve linux-image-amd64 (apt-get update?)"
		echo "$vmlinuz"
		return
	fi
	vmlinuz=$cache/$pkg.vmlinuz
	if [ ! -f "$vmlinuz" ]; then
		say "downloading $pkg"
		dl=$tmp/kernel
		mkdir -p "$dl" "$cache"
		(cd "$dl" && apt-get download -qq "$pkg" 2>/dev/null) || die "apt-get download $pkg failed"
		dpkg-deb -x "$dl"/"$pkg"_*.deb "$dl/root"
		cp "$(find "$dl/root/boot" -name 'vmlinuz-*' | head -n1)" "$vmlinuz.part"
		mv "$vmlinuz.part" "$vmlinuz"
		rm -rf "$dl"
	fi
	echo "$vmlinuz"
}

# build_initrd writes $tmp/initrd: init.go as /init, the test binary as
# /test.bin.
#
# The test binary is built without Go 1.26's Green Tea garbage collector
# (GOEXPERIMENT=nogreenteagc): on a CPU with AVX-512 VL, BW, DQ, VBMI,
# BITALG and GFNI it scans spans with AVX-512, and under Bochs 2.7 that
# scan goes wrong. With it, runs of quant's tests ended in "found pointer
# to free object" or "found bad pointer in Go heap" in runtime.scanSpan,
# with the portable kernels too; without it, the same runs pass (GOGC=20).
# GODEBUG=cpu.avx512vl=off would turn the scan off as well, but also
# x/sys/cpu's AVX512VL, and with it the tier under test.
build_initrd() {
	(cd "$repo" && CGO_ENABLED=0 go build -o "$tmp/init" tests/avx512/init.go)
	if [ -z "$test_bin" ]; then
		say "building quant.test"
		(cd "$repo" && CGO_ENABLED=0 GOEXPERIMENT=nogreenteagc go test -c -o "$tmp/quant.test" ./quant)
		test_bin=$tmp/quant.test
	fi
	python3 "$here/initramfs.py" "$tmp/initrd" init="$tmp/init" test.bin="$test_bin"
}

# kernel_args prints the kernel command line: the initrd, the console,
# the tier (an unknown KEY=VALUE word is init's environment) and,
# after "--", init's arguments (an unknown word without "=" would be one
# too, so there must be none before "--").
kernel_args() {
	local line="initrd=/initrd console=ttyS0,115200 quiet printk.time=1 mitigations=off $workarounds"
	if [ -n "$append" ]; then line+=" $append"; fi
	if [ -n "$tier" ]; then line+=" EDGED_CPU_KERNELS=$tier EDGED_WANT_CPU_KERNELS=$tier"; fi
	line+=" --"
	local a
	for a in "${test_args[@]}"; do
		case $a in
		*'"'* | *$'\n'*) die "a test flag with a double quote or a newline: $a" ;;
		*' '* | '') line+=" \"$a\"" ;;
		*) line+=" $a" ;;
		esac
	done
	[ ${#line} -lt 2000 ] || die "kernel command line too long"
	echo "$line"
}

# make_iso writes $tmp/boot.iso: ISOLINUX booting vmlinuz with the initrd.
make_iso() {
	local vmlinuz=$1 iso=$tmp/iso
	mkdir -p "$iso/isolinux"
	cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
	cp "$vmlinuz" "$iso/vmlinuz"
	cp "$tmp/initrd" "$iso/initrd"
	cat >"$iso/isolinux/isolinux.cfg" <<-EOF
		DEFAULT linux
		PROMPT 0
		TIMEOUT 0
		LABEL linux
		  KERNEL /vmlinuz
		  APPEND $(kernel_args)
	EOF
	genisoimage -quiet -o "$tmp/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
		-no-emul-boot -boot-load-size 4 -boot-info-table -J -R "$iso"
	rm -rf "$iso"
}

# write_bochsrc writes $tmp/bochsrc: CD boot, serial to a file, the guest
# clock driven by the emulated instruction count, and no sound (Debian's
# mixer thread aborts without a sound card).
write_bochsrc() {
	cat >"$tmp/bochsrc" <<-EOF
		display_library: sdl2
		vga: extension=vbe, update_freq=1
		sound: driver=dummy
		speaker: enabled=0
		romimage: file=/usr/share/bochs/BIOS-bochs-latest
		vgaromimage: file=/usr/share/vgabios/vgabios.bin
		cpu: model=$cpu_model, count=1, ips=100000000, reset_on_triple_fault=0, ignore_bad_msrs=1
		memory: guest=$mem, host=$mem
		ata0-master: type=cdrom, path=$tmp/boot.iso, status=inserted
		boot: cdrom
		com1: enabled=1, mode=file, dev=$tmp/serial.log
		clock: sync=none, time0=local
		log: $tmp/bochs.log
		panic: action=fatal
		error: action=ignore
		info: action=report
		debug: action=ignore
	EOF
}

# kernel_lines matches the kernel's console lines (printk.time=1).
kernel_lines='^\[ *[0-9]+\.[0-9]+\]'

# guest_output prints the serial log without the kernel's lines.
guest_output() {
	tr -d '\r' <"$tmp/serial.log" | grep -Ev "$kernel_lines" || true
}

seen() { grep -q "$1" "$tmp/serial.log"; }

# run_bochs boots the image and waits until init reports the exit status
# (init then powers off, which ends Bochs), the kernel panics, Bochs stops,
# or the timeout passes. It sets $boot_s (Bochs start to init) and $test_s
# (init's start of the tests to their end), empty if not seen.
run_bochs() {
	local start now started='' running='' ended=''
	: >"$tmp/serial.log"
	# Debian's bochs has the debugger: "c" starts the CPU.
	echo c >"$tmp/debugger.rc"
	start=$SECONDS
	SDL_VIDEODRIVER=dummy bochs -q -f "$tmp/bochsrc" -rc "$tmp/debugger.rc" \
		</dev/null >"$tmp/bochs.out" 2>&1 &
	bochs_pid=$!
	while sleep 2; do
		now=$SECONDS
		if [ -z "$started" ] && seen '^avx512-init: started'; then started=$now; fi
		if [ -z "$running" ] && seen '^avx512-init: running'; then running=$now; fi
		if [ -z "$ended" ] && seen '^avx512-init: exit status'; then ended=$now; fi
		if ! kill -0 "$bochs_pid" 2>/dev/null; then
			[ -n "$ended" ] || say "bochs stopped"
			break
		fi
		# Power-off takes Bochs a moment; do not wait for it long.
		if [ -n "$ended" ] && [ $((now - ended)) -ge 20 ]; then
			say "bochs did not power off"
			break
		fi
		if seen 'Kernel panic'; then say "the kernel panicked"; break; fi
		if [ $((now - start)) -ge "$timeout" ]; then say "timed out after ${timeout}s"; break; fi
	done
	kill "$bochs_pid" 2>/dev/null || true
	wait "$bochs_pid" 2>/dev/null || true
	bochs_pid=
	boot_s=${started:+$((started - start))}
	test_s=${ended:+$((ended - ${running:-$ended}))}
}

# verdict succeeds if init reported status 0 and the output has a PASS line
# and no FAIL line.
verdict() {
	local out
	out=$(guest_output)
	grep -q '^avx512-init: exit status 0 ' <<<"$out" &&
		grep -qx 'PASS' <<<"$out" &&
		! grep -Eq '^(--- )?FAIL' <<<"$out"
}

main() {
	parse_args "$@"
	install_tools
	tmp=$(mktemp -d)
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	local vmlinuz
	vmlinuz=$(fetch_kernel)
	build_initrd
	make_iso "$vmlinuz"
	write_bochsrc

	say "booting $(basename "$vmlinuz" .vmlinuz) on bochs cpu=$cpu_model: $(kernel_args)"
	run_bochs
	guest_output
	say "boot ${boot_s:-?}s, tests ${test_s:-?}s (wall clock)"
	if verdict; then
		say "ok"
		return 0
	fi
	say "FAILED; the kernel's messages (tail):"
	{ tr -d '\r' <"$tmp/serial.log" | grep -E "$kernel_lines" | tail -n 40; } >&2 || true
	say "bochs (tail):"
	tail -n 20 "$tmp/bochs.out" >&2 || true
	return 1
}

main "$@"
