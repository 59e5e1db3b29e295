// Package testdeps finds the files of the repository's test-only npm
// packages (testdeps/package.json: the SES emulator, axe-core) for tests,
// walking up from the working directory to testdeps/ and running `npm ci`
// there once when a file is missing (a fresh clone, or a package added since
// the last install).
package testdeps

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Path returns the absolute path of rel (e.g.
// "node_modules/axe-core/axe.min.js") inside testdeps/. When the file is
// missing it runs `npm ci` in testdeps/ first, under a file lock so that test
// binaries of several packages running at once install only once.
func Path(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		deps := filepath.Join(dir, "testdeps")
		if _, err := os.Stat(filepath.Join(deps, "package.json")); err == nil {
			file := filepath.Join(deps, rel)
			if err := installOnce(deps, file); err != nil {
				return "", err
			}
			return file, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testdeps/package.json not found above the working directory")
		}
		dir = parent
	}
}

func installOnce(deps, file string) error {
	if _, err := os.Stat(file); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("%s is not installed and npm is not on PATH to install it", file)
	}
	lock, err := os.OpenFile(filepath.Join(deps, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(file); err == nil {
		return nil // another test binary installed it while we waited
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = deps
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", deps, err, out)
	}
	if _, err := os.Stat(file); err != nil {
		return fmt.Errorf("npm ci in %s did not install %s: %w", deps, file, err)
	}
	return nil
}
