package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// podLoopback gives each redis-cli in an exec probe that names no host
// (it would reach the pod's own 127.0.0.1) the pod's address.
func podLoopback(argv []string, ip string) []string {
	var out []string
	hasHost := slices.Contains(argv, "-h")
	for _, a := range argv {
		if a == "redis-cli" {
			out = append(out, a)
			if !hasHost {
				out = append(out, "-h", ip)
			}
			continue
		}
		var b strings.Builder
		for {
			i := strings.Index(a, "redis-cli")
			if i < 0 {
				b.WriteString(a)
				break
			}
			end := i + len("redis-cli")
			b.WriteString(a[:end])
			a = a[end:]
			segment := a
			if j := strings.IndexAny(a, "|;&\n"); j >= 0 {
				segment = a[:j]
			}
			if !regexp.MustCompile(`(^|\s)-h(\s|$)`).MatchString(segment) {
				b.WriteString(" -h " + ip)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// probe runs one probe of a container once.
func (k *Kubelet) probe(c *Container, pr *corev1.Probe) error {
	timeout := time.Second
	if pr.TimeoutSeconds > 0 {
		timeout = time.Duration(pr.TimeoutSeconds) * time.Second
	}
	ip := c.Pod.IP
	switch {
	case pr.Exec != nil:
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if out, err := c.Exec(ctx, pr.Exec.Command).CombinedOutput(); err != nil {
			return fmt.Errorf("exec %q: %v: %s", pr.Exec.Command, err, out)
		}
		return nil
	case pr.HTTPGet != nil:
		port, err := ContainerPort(c.Spec, pr.HTTPGet.Port.String())
		if err != nil {
			return err
		}
		cl := http.Client{Timeout: timeout}
		scheme := "http"
		if pr.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			// The kubelet does not verify the certificate of an HTTPS probe.
			scheme = "https"
			cl.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		}
		r, err := cl.Get(scheme + "://" + net.JoinHostPort(ip, strconv.Itoa(port)) + pr.HTTPGet.Path)
		if err != nil {
			return err
		}
		r.Body.Close()
		if r.StatusCode < 200 || r.StatusCode >= 400 {
			return fmt.Errorf("GET %s: %d", pr.HTTPGet.Path, r.StatusCode)
		}
		return nil
	case pr.TCPSocket != nil:
		port, err := ContainerPort(c.Spec, pr.TCPSocket.Port.String())
		if err != nil {
			return err
		}
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), timeout)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return fmt.Errorf("probe kind not emulated")
}

// ContainerPort resolves a probe's port: a number, or the name of a port
// of the container.
func ContainerPort(c corev1.Container, port string) (int, error) {
	for _, p := range c.Ports {
		if p.Name == port {
			return int(p.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(port); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port %q", c.Name, port)
}

// PollEvery calls cond every interval until it holds, or fails the test
// after d.
func PollEvery(t *testing.T, d, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(interval)
	}
}

// WaitFor calls cond every interval until it returns nil, or fails the
// test after d with its last error.
func WaitFor(t *testing.T, d, interval time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(interval)
	}
}

// WaitReady waits until every container of the pod passes its readiness
// probe (a container without one is ready once started), publishes the
// pod's names, and checks that the liveness probes pass too.
func (k *Kubelet) WaitReady(p *Pod, d time.Duration) {
	t := k.t
	t.Helper()
	WaitFor(t, d, 100*time.Millisecond, "pod "+p.Name+" to be ready", func() error {
		for _, c := range p.Containers {
			if code, ok := c.Exited(); ok {
				t.Fatalf("%s/%s exited with code %d:\n%s", p.Name, c.Name, code, c.Logs)
			}
			if c.Spec.ReadinessProbe == nil {
				continue
			}
			if err := k.probe(c, c.Spec.ReadinessProbe); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
		}
		return nil
	})
	k.Net.Publish(p.IP, k.dnsNames(p, true)...)
	for _, c := range p.Containers {
		if c.Spec.LivenessProbe != nil {
			if err := k.probe(c, c.Spec.LivenessProbe); err != nil {
				t.Errorf("%s/%s is ready but fails its liveness probe: %v", p.Name, c.Name, err)
			}
		}
	}
}

// RunStatefulSet creates the pods of a StatefulSet as its controller
// does: with OrderedReady (the default) each one ready before the next,
// with Parallel all at once.
func (k *Kubelet) RunStatefulSet(s *appsv1.StatefulSet) []*Pod {
	k.t.Helper()
	pods := make([]*Pod, *s.Spec.Replicas)
	for i := range pods {
		pods[i] = k.Run(StatefulSetPod(s, i))
		if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
			k.WaitReady(pods[i], time.Minute)
		}
	}
	for _, p := range pods {
		k.WaitReady(p, time.Minute)
	}
	return pods
}

// RunJob runs a Job's pod to completion, restarting its container after a
// failure (restartPolicy OnFailure) up to the backoff limit.
func (k *Kubelet) RunJob(j *batchv1.Job) {
	t := k.t
	t.Helper()
	p := k.Run(PodSpec{Name: j.Name + "-0", Template: j.Spec.Template})
	if len(p.Containers) != 1 {
		t.Fatalf("Job %s: want one container", j.Name)
	}
	c := p.Containers[0]
	limit := 6
	if j.Spec.BackoffLimit != nil {
		limit = int(*j.Spec.BackoffLimit)
	}
	for failures := 0; ; failures++ {
		PollEvery(t, 2*time.Minute, 50*time.Millisecond, "Job "+j.Name+" to finish", func() bool {
			_, ok := c.Exited()
			return ok
		})
		code, _ := c.Exited()
		if code == 0 {
			return
		}
		if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyOnFailure || failures == limit {
			t.Fatalf("Job %s failed (exit code %d, %d failures):\n%s", j.Name, code, failures+1, c.Logs)
		}
		k.StartContainer(c)
	}
}
