package cxxemu

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestBuild(t *testing.T) {
	if _, err := exec.LookPath("g++"); err != nil {
		t.Skip("no g++")
	}
	dir := t.TempDir()
	driver := filepath.Join(dir, "driver.cpp")
	if err := os.WriteFile(driver, []byte("#include \"kernels.cpp\"\nint main() { return answer() == 42 ? 0 : 1; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Build("emu-test", driver, "int answer() { return 42; }\n", "int main() { return 0; }\n")
	defer p.Remove()
	if err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(p.Path).Run(); err != nil {
		t.Fatalf("run: %v", err)
	}
	p.Remove()
	if _, err := os.Stat(p.Dir); !os.IsNotExist(err) {
		t.Fatalf("%s left behind", p.Dir)
	}

	// A compiler that fails the probe is ErrNoCompiler, for a skip.
	t.Setenv("CXX", "false")
	q, err := Build("emu-test", driver, "", "int main() {}\n")
	defer q.Remove()
	if !errors.Is(err, ErrNoCompiler) {
		t.Fatalf("got %v", err)
	}
}
