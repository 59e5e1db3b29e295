// Package npmdeps owns installing the npm packages tests run (testdeps/,
// examples/node-publisher/): `npm ci` in a directory on first use, once
// across the test binaries of several packages running at once.
package npmdeps

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
)

// ErrNoNPM: npm is not on PATH, so a missing package cannot be installed.
var ErrNoNPM = errors.New("npm is not on PATH")

// Find walks up from the working directory to the first directory whose
// rel (a path such as "testdeps" or "examples/node-publisher") holds a
// package.json, and returns that directory.
func Find(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		deps := filepath.Join(dir, rel)
		if _, err := os.Stat(filepath.Join(deps, "package.json")); err == nil {
			return deps, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s/package.json not found above the working directory", rel)
		}
		dir = parent
	}
}

// Install runs `npm ci` in dir unless want (a file npm ci installs, such as
// node_modules/<package>/package.json) exists. It holds a file lock in dir
// meanwhile, so concurrent callers install once. Its error is ErrNoNPM
// (wrapped) when npm is missing, or npm's own output.
func Install(dir, want string) error {
	if _, err := os.Stat(want); err == nil {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("%s is not installed: %w", want, ErrNoNPM)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(want); err == nil {
		return nil // another test binary installed it while we waited
	}
	cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
	}
	return nil
}
