package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy in front of a Redis server for fault injection. It
// reads RESP (2 and 3) in both directions, so it can pair every command
// with its reply and hurt exactly one command: drop its reply after Redis
// ran it, or cut the connection half way through sending it. In raw mode it
// only copies bytes (for replication links, whose RDB transfer is not RESP),
// with an optional one-way delay.
//
// Byte-stream fault tools (toxiproxy's toxics) can delay, cut or reset a
// stream, but not "the reply of this EVALSHA": that needs the protocol.
type Proxy struct {
	Addr   string
	target string
	raw    bool
	ln     net.Listener

	mu    sync.Mutex
	rule  func(args []string) Fault
	delay time.Duration
	conns map[*proxyConn]struct{}
	// closed: Close has begun; a connection accepted meanwhile is reset.
	closed bool

	wg    sync.WaitGroup
	stats struct {
		conns, commands, dropped, resetReq, resetReply atomic.Int64
	}
}

// Fault is what the proxy does to one command.
type Fault int

const (
	// Pass forwards the command and its reply.
	Pass Fault = iota
	// DropReply forwards the command, swallows its reply and closes the
	// client's connection: Redis ran the command, the client sees EOF.
	DropReply
	// ResetReply is DropReply with a TCP reset instead of a close.
	ResetReply
	// ResetRequest forwards half of the command's bytes, then resets both
	// connections: Redis never runs it.
	ResetRequest
)

// ProxyStats counts what a Proxy saw and did.
type ProxyStats struct {
	Conns        int64 // client connections accepted
	Commands     int64 // commands forwarded in full
	Dropped      int64 // replies swallowed (DropReply, ResetReply)
	ResetRequest int64 // commands cut half way (ResetRequest)
}

// ProxyConfig configures StartProxy.
type ProxyConfig struct {
	// Raw copies bytes without reading RESP; rules do not apply.
	Raw bool
	// Delay holds every chunk of bytes this long, in each direction.
	Delay time.Duration
}

// StartProxy listens on a free loopback port and forwards every connection
// to target. It stops when the test ends.
func StartProxy(tb testing.TB, target string, cfg ProxyConfig) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, raw: cfg.Raw, ln: ln, delay: cfg.Delay,
		conns: make(map[*proxyConn]struct{})}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(p.Close)
	return p
}

// SetRule makes the proxy ask rule about every later command (its name and
// arguments, as sent). A nil rule passes everything.
func (p *Proxy) SetRule(rule func(args []string) Fault) {
	p.mu.Lock()
	p.rule = rule
	p.mu.Unlock()
}

// Stats returns the counters so far.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{
		Conns:        p.stats.conns.Load(),
		Commands:     p.stats.commands.Load(),
		Dropped:      p.stats.dropped.Load(),
		ResetRequest: p.stats.resetReq.Load(),
	}
}

// Cut resets every open connection at once and discards the bytes still
// held by the delay: a network partition. New connections are accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
}

// Close stops listening, cuts every connection and waits for the proxy's
// goroutines to end.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.stats.conns.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c.(*net.TCPConn))
		}()
	}
}

type proxyConn struct {
	client, server *net.TCPConn
	once           sync.Once
	done           chan struct{}
}

// reset closes both sides with a TCP reset (SO_LINGER 0).
func (c *proxyConn) reset() {
	c.once.Do(func() {
		close(c.done)
		c.client.SetLinger(0)
		c.client.Close()
		if c.server != nil {
			c.server.SetLinger(0)
			c.server.Close()
		}
	})
}

// close closes both sides normally (FIN).
func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.client.Close()
		if c.server != nil {
			c.server.Close()
		}
	})
}

func (p *Proxy) serve(client *net.TCPConn) {
	pc := &proxyConn{client: client, done: make(chan struct{})}
	d, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		pc.reset()
		return
	}
	pc.server = d.(*net.TCPConn)
	p.mu.Lock()
	if p.closed {
		// Accepted before Close, registered after its Cut: nobody else
		// would end this connection.
		p.mu.Unlock()
		pc.reset()
		return
	}
	p.conns[pc] = struct{}{}
	delay := p.delay
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()

	toServer := newDelayWriter(pc.server, delay, pc)
	toClient := newDelayWriter(pc.client, delay, pc)
	var wg sync.WaitGroup
	wg.Add(2)
	if p.raw {
		go func() { defer wg.Done(); copyChunks(toServer, pc.client, pc) }()
		go func() { defer wg.Done(); copyChunks(toClient, pc.server, pc) }()
	} else {
		// Faults of the commands sent, in order, for the reply side.
		pending := make(chan Fault, 1<<16)
		go func() { defer wg.Done(); p.requests(pc, toServer, pending) }()
		go func() { defer wg.Done(); p.replies(pc, toClient, pending) }()
	}
	wg.Wait()
	toServer.stop()
	toClient.stop()
}

// requests reads commands from the client and forwards them.
func (p *Proxy) requests(pc *proxyConn, w *delayWriter, pending chan<- Fault) {
	defer pc.close()
	r := bufio.NewReader(pc.client)
	for {
		raw, args, err := readCommand(r)
		if err != nil {
			return
		}
		p.mu.Lock()
		rule := p.rule
		p.mu.Unlock()
		f := Pass
		if rule != nil {
			f = rule(args)
		}
		if f == ResetRequest {
			p.stats.resetReq.Add(1)
			w.write(raw[:len(raw)/2])
			w.flush()
			pc.reset()
			return
		}
		pending <- f
		p.stats.commands.Add(1)
		if !w.write(raw) {
			return
		}
	}
}

// replies reads replies from the server and forwards them, but for the one
// whose command was marked to lose it.
func (p *Proxy) replies(pc *proxyConn, w *delayWriter, pending <-chan Fault) {
	defer pc.close()
	r := bufio.NewReader(pc.server)
	for {
		raw, push, err := readReply(r)
		if err != nil {
			return
		}
		if push {
			if !w.write(raw) {
				return
			}
			continue
		}
		var f Fault
		select {
		case f = <-pending:
		default:
			// A reply to no command: the stream is out of step.
			return
		}
		switch f {
		case DropReply:
			p.stats.dropped.Add(1)
			w.flush()
			pc.close()
			return
		case ResetReply:
			p.stats.dropped.Add(1)
			w.flush()
			pc.reset()
			return
		}
		if !w.write(raw) {
			return
		}
	}
}

func copyChunks(w *delayWriter, r io.Reader, pc *proxyConn) {
	defer pc.close()
	for {
		buf := make([]byte, 32<<10)
		n, err := r.Read(buf)
		if n > 0 && !w.write(buf[:n]) {
			return
		}
		if err != nil {
			w.flush()
			return
		}
	}
}

// delayWriter writes chunks to a connection in order, each no sooner than
// delay after it was handed over. Cut drops what it still holds.
type delayWriter struct {
	conn  net.Conn
	delay time.Duration
	pc    *proxyConn
	ch    chan chunk
	wg    sync.WaitGroup
	once  sync.Once
}

type chunk struct {
	b   []byte
	due time.Time
	ack chan struct{} // flush marker: closed when every earlier chunk is written
}

func newDelayWriter(conn net.Conn, delay time.Duration, pc *proxyConn) *delayWriter {
	w := &delayWriter{conn: conn, delay: delay, pc: pc, ch: make(chan chunk, 1024)}
	w.wg.Add(1)
	go w.run()
	return w
}

func (w *delayWriter) run() {
	defer w.wg.Done()
	for c := range w.ch {
		if c.ack != nil {
			close(c.ack)
			continue
		}
		if d := time.Until(c.due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-w.pc.done:
				t.Stop()
			}
		}
		select {
		case <-w.pc.done:
			continue // cut: drop what is in flight
		default:
		}
		if _, err := w.conn.Write(c.b); err != nil {
			w.pc.close()
		}
	}
}

// write queues b; it reports false once the connection is closed.
func (w *delayWriter) write(b []byte) bool {
	select {
	case <-w.pc.done:
		return false
	case w.ch <- chunk{b: b, due: time.Now().Add(w.delay)}:
		return true
	}
}

// flush waits until everything queued so far is written or dropped.
func (w *delayWriter) flush() {
	ack := make(chan struct{})
	select {
	case <-w.pc.done:
		return
	case w.ch <- chunk{ack: ack}:
	}
	select {
	case <-ack:
	case <-w.pc.done:
	}
}

func (w *delayWriter) stop() {
	w.once.Do(func() { close(w.ch) })
	w.wg.Wait()
}

var errProtocol = errors.New("redistest: proxy: unexpected RESP")

// readCommand reads one command (an array of bulk strings) and returns its
// bytes and arguments.
func readCommand(r *bufio.Reader) ([]byte, []string, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, nil, err
	}
	if len(line) < 3 || line[0] != '*' {
		return nil, nil, fmt.Errorf("%w: command starts %q", errProtocol, line)
	}
	n, err := strconv.Atoi(string(line[1 : len(line)-2]))
	if err != nil || n < 0 {
		return nil, nil, fmt.Errorf("%w: %q", errProtocol, line)
	}
	raw := append([]byte(nil), line...)
	args := make([]string, 0, n)
	for i := 0; i < n; i++ {
		l, err := readLine(r)
		if err != nil {
			return nil, nil, err
		}
		if len(l) < 3 || l[0] != '$' {
			return nil, nil, fmt.Errorf("%w: argument starts %q", errProtocol, l)
		}
		size, err := strconv.Atoi(string(l[1 : len(l)-2]))
		if err != nil || size < 0 {
			return nil, nil, fmt.Errorf("%w: %q", errProtocol, l)
		}
		raw = append(raw, l...)
		body := make([]byte, size+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, nil, err
		}
		raw = append(raw, body...)
		args = append(args, string(body[:size]))
	}
	return raw, args, nil
}

// readReply reads one reply, RESP2 or RESP3, and reports whether it was an
// out-of-band push.
func readReply(r *bufio.Reader) (raw []byte, push bool, err error) {
	line, err := readLine(r)
	if err != nil {
		return nil, false, err
	}
	raw = append([]byte(nil), line...)
	push = line[0] == '>'
	raw, err = readValueRest(r, raw, line)
	return raw, push, err
}

// readValueRest reads the rest of the value whose first line is line.
func readValueRest(r *bufio.Reader, raw, line []byte) ([]byte, error) {
	if len(line) < 3 {
		return nil, fmt.Errorf("%w: %q", errProtocol, line)
	}
	switch line[0] {
	case '+', '-', ':', '_', ',', '#', '(':
		return raw, nil
	case '$', '!', '=':
		n, err := strconv.Atoi(string(line[1 : len(line)-2]))
		if err != nil {
			return nil, fmt.Errorf("%w: %q", errProtocol, line)
		}
		if n < 0 {
			return raw, nil
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		return append(raw, body...), nil
	case '*', '~', '>', '%', '|':
		n, err := strconv.Atoi(string(line[1 : len(line)-2]))
		if err != nil {
			return nil, fmt.Errorf("%w: %q", errProtocol, line)
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		if line[0] == '|' {
			n++ // an attribute precedes the value it describes
		}
		for i := 0; i < n; i++ {
			l, err := readLine(r)
			if err != nil {
				return nil, err
			}
			raw = append(raw, l...)
			if raw, err = readValueRest(r, raw, l); err != nil {
				return nil, err
			}
		}
		return raw, nil
	}
	return nil, fmt.Errorf("%w: type %q", errProtocol, line[0])
}

// readLine reads up to and including "\r\n"; the slice is only valid until
// the next read.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line %q", errProtocol, line)
	}
	return line, nil
}
