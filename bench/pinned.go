package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Helpers of the commands that measure Redis's CPU with Redis and the
// client each pinned to cores of their own (bench/rediscpu,
// bench/scriptprofile). Linux only.

// envPinned marks a process that PinSelf already ran under taskset.
const envPinned = "SESSIONCACHE_BENCH_PINNED"

// PinSelf runs this program again under taskset -c cores, so that the Go
// runtime sizes GOMAXPROCS for the cores it gets. It returns only if the
// program is already pinned, or cannot be (taskset missing: it says so).
func PinSelf(cores string) {
	if os.Getenv(envPinned) != "" {
		return
	}
	ts, err := exec.LookPath("taskset")
	if err != nil {
		fmt.Fprintln(os.Stderr, "taskset not found: not pinned")
		return
	}
	self, err := os.Executable()
	if err != nil {
		return
	}
	env := append(os.Environ(), envPinned+"=1")
	err = syscall.Exec(ts, append([]string{ts, "-c", cores, self}, os.Args[1:]...), env)
	fmt.Fprintln(os.Stderr, "exec taskset:", err)
}

// PinServer moves every thread of the redis-server behind c to cores.
func PinServer(ctx context.Context, c *redis.Client, cores string) error {
	pid, err := InfoField(ctx, c, "server", "process_id")
	if err != nil {
		return err
	}
	out, err := exec.Command("taskset", "-a", "-p", "-c", cores, pid).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset %s: %v: %s", pid, err, out)
	}
	return nil
}

// InfoField reads one field of an INFO section.
func InfoField(ctx context.Context, c *redis.Client, section, field string) (string, error) {
	info, err := c.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s has no %s", section, field)
}

// MainThreadCPU returns the CPU seconds of Redis's main thread, user and
// system (used_cpu_*_main_thread; used_cpu_* before Redis 7).
func MainThreadCPU(ctx context.Context, c *redis.Client) (float64, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	f := map[string]float64{}
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			f[k] = x
		}
	}
	if _, ok := f["used_cpu_user_main_thread"]; ok {
		return f["used_cpu_user_main_thread"] + f["used_cpu_sys_main_thread"], nil
	}
	return f["used_cpu_user"] + f["used_cpu_sys"], nil
}
