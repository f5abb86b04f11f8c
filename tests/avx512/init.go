//go:build ignore

// The guest's /init for tests/avx512/check.sh: it reports the CPU the guest
// sees (the model, the AVX-512 flags in /proc/cpuinfo, and what
// golang.org/x/sys/cpu reports, which is what the kernel tiers go by), runs
// /test.bin with this program's arguments, waits for the serial line to
// drain, prints the exit status on a line check.sh looks for, and powers
// the machine off (Bochs then exits).
//
// Built by check.sh: CGO_ENABLED=0 go build -o init tests/avx512/init.go
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/cpu"
)

func main() {
	say("started")
	if err := syscall.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		say("mount /proc: %v", err)
	}
	cpuinfo()
	say("x/sys/cpu: avx2=%v fma=%v f16c=%v avx512f=%v avx512bw=%v avx512vl=%v avx512vnni=%v",
		cpu.X86.HasAVX2, cpu.X86.HasFMA, cpu.X86.HasF16C, cpu.X86.HasAVX512F,
		cpu.X86.HasAVX512BW, cpu.X86.HasAVX512VL, cpu.X86.HasAVX512VNNI)
	say("running /test.bin %s", strings.Join(os.Args[1:], " "))

	start := time.Now()
	cmd := exec.Command("/test.bin", os.Args[1:]...)
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	code := 0
	if err := cmd.Run(); err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			say("%v", err)
		}
	}
	say("exit status %d after %.1fs guest time", code, time.Since(start).Seconds())

	// tcdrain: the kernel prints its power-off messages straight to the
	// port, past what the tty still buffers.
	syscall.Syscall(syscall.SYS_IOCTL, 1, 0x5409, 1) // TCSBRK
	syscall.Sync()
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// cpuinfo prints the first processor's model name and its AVX-512 flags.
func cpuinfo() {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		say("%v", err)
		return
	}
	var model string
	var avx512 []string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(k) {
		case "model name":
			model = strings.TrimSpace(v)
		case "flags":
			for _, f := range strings.Fields(v) {
				if strings.HasPrefix(f, "avx512") {
					avx512 = append(avx512, f)
				}
			}
		}
		if line == "" && model != "" {
			break
		}
	}
	say("cpu: %s", model)
	say("cpuinfo: %s", strings.Join(avx512, " "))
}

func say(format string, args ...any) {
	fmt.Printf("avx512-init: "+format+"\n", args...)
}
