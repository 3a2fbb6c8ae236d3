// Command reloader is a Go client that follows certificate rotation the way
// Go services do when they load their client certificate per handshake: its
// tls.Config.GetClientCertificate reads the files again on every handshake,
// from several goroutines at once, each in a loop of fresh connections
// (keep-alives off), until standard input is closed or -duration is over.
//
// Pair mode (-crt, -key): os.ReadFile(crt), then os.ReadFile(key), then
// tls.X509KeyPair.  Bundle mode (-bundle): tls.LoadX509KeyPair(b, b), which
// opens the bundle twice per load.
//
// Output, one JSON object per line, written at once:
//
//	{"event":"serial",...}   the first load of each certificate serial, with
//	                          the CLOCK_MONOTONIC time (comparable with
//	                          Python's time.monotonic) and the wall time
//	{"event":"summary",...}  counts at the end: loads, handshakes, failures by
//	                          kind, mismatches ("private key does not match
//	                          public key"), every serial seen, and the serial
//	                          each goroutine loaded last
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// mono is CLOCK_MONOTONIC in seconds, the clock of Python's time.monotonic().
func mono() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func serialText(c *x509.Certificate) string {
	b := c.SerialNumber.Bytes()
	parts := make([]string, len(b))
	for i, v := range b {
		parts[i] = fmt.Sprintf("%02x", v)
	}
	return strings.Join(parts, ":")
}

type serialSeen struct {
	Serial    string  `json:"serial"`
	FirstMono float64 `json:"first_mono"`
	FirstReal int64   `json:"first_real_ns"`
	Loads     int64   `json:"loads"`
}

type stats struct {
	mu                sync.Mutex
	out               *json.Encoder
	loads             int64
	handshakes        int64
	readFailures      int64
	parseFailures     int64
	mismatches        int64
	handshakeFailures int64
	errors            []string
	serials           map[string]*serialSeen
	order             []string
	last              []string // the serial each goroutine loaded last
}

func (s *stats) emit(v interface{}) {
	// Callers hold s.mu; os.Stdout is unbuffered, so each line leaves at once.
	_ = s.out.Encode(v)
}

func (s *stats) noteError(kind string, err error) {
	text := kind + ": " + err.Error()
	if len(s.errors) < 10 {
		for _, e := range s.errors {
			if e == text {
				return
			}
		}
		s.errors = append(s.errors, text)
	}
}

func (s *stats) loaded(serial string, goroutine int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	s.last[goroutine] = serial
	if seen, ok := s.serials[serial]; ok {
		seen.Loads++
		return
	}
	seen := &serialSeen{Serial: serial, FirstMono: mono(), FirstReal: time.Now().UnixNano(), Loads: 1}
	s.serials[serial] = seen
	s.order = append(s.order, serial)
	s.emit(map[string]interface{}{"event": "serial", "serial": serial, "mono": seen.FirstMono,
		"real_ns": seen.FirstReal, "goroutine": goroutine})
}

func (s *stats) failed(kind string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch kind {
	case "read":
		s.loads++
		s.readFailures++
	case "mismatch":
		s.loads++
		s.mismatches++
	case "parse":
		s.loads++
		s.parseFailures++
	case "handshake":
		s.handshakeFailures++
	}
	s.noteError(kind, err)
}

// loader reads the certificate and key once, the way the mode says.
type loader func() (tls.Certificate, error, string)

func pairLoader(crt, key string) loader {
	return func() (tls.Certificate, error, string) {
		c, err := os.ReadFile(crt)
		if err != nil {
			return tls.Certificate{}, err, "read"
		}
		k, err := os.ReadFile(key)
		if err != nil {
			return tls.Certificate{}, err, "read"
		}
		pair, err := tls.X509KeyPair(c, k)
		if err != nil {
			return pair, err, classify(err)
		}
		return pair, nil, ""
	}
}

func bundleLoader(bundle string) loader {
	return func() (tls.Certificate, error, string) {
		pair, err := tls.LoadX509KeyPair(bundle, bundle)
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				return pair, err, "read"
			}
			return pair, err, classify(err)
		}
		return pair, nil, ""
	}
}

func classify(err error) string {
	if strings.Contains(err.Error(), "private key does not match public key") {
		return "mismatch"
	}
	return "parse"
}

func worker(id int, url string, roots *x509.CertPool, load loader, s *stats, stop <-chan struct{},
	wg *sync.WaitGroup) {
	defer wg.Done()
	// Set by the handshake, which http.Transport runs on a goroutine of its own.
	var loadFailed atomic.Bool
	cfg := &tls.Config{
		RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, err, kind := load()
			if err != nil {
				loadFailed.Store(true)
				s.failed(kind, err)
				return nil, err
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				loadFailed.Store(true)
				s.failed("parse", err)
				return nil, err
			}
			s.loaded(serialText(leaf), id)
			return &pair, nil
		},
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: cfg},
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		loadFailed.Store(false)
		resp, err := client.Get(url)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = errors.New(resp.Status)
			}
		}
		switch {
		case err == nil:
			s.mu.Lock()
			s.handshakes++
			s.mu.Unlock()
		case !loadFailed.Load():
			// A failed load is counted where it happened; this is the server or the network.
			s.failed("handshake", err)
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func main() {
	crt := flag.String("crt", "", "client certificate file (pair mode)")
	key := flag.String("key", "", "private key file (pair mode)")
	bundle := flag.String("bundle", "", "key+certificate bundle, loaded as tls.LoadX509KeyPair(b, b) (bundle mode)")
	urls := flag.String("url", "", "URL(s) to GET, comma separated; goroutine i uses URL i modulo their number")
	ca := flag.String("ca", "", "CA file that verifies the server(s)")
	n := flag.Int("n", 4, "goroutines")
	duration := flag.Duration("duration", 0, "stop after this long (0: when standard input is closed)")
	flag.Parse()

	var load loader
	mode := "pair"
	switch {
	case *bundle != "" && *crt == "" && *key == "":
		load, mode = bundleLoader(*bundle), "bundle"
	case *bundle == "" && *crt != "" && *key != "":
		load = pairLoader(*crt, *key)
	default:
		fmt.Fprintln(os.Stderr, "usage: reloader (-crt CRT -key KEY | -bundle PEM) -url URL[,URL...] -ca SERVER_CA [-n N] [-duration D]")
		os.Exit(2)
	}
	if *urls == "" || *ca == "" || *n < 1 {
		fmt.Fprintln(os.Stderr, "reloader: -url, -ca and -n >= 1 are needed")
		os.Exit(2)
	}
	caPEM, err := os.ReadFile(*ca)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reloader:", err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		fmt.Fprintln(os.Stderr, "reloader: no certificate in", *ca)
		os.Exit(2)
	}
	targets := strings.Split(*urls, ",")

	s := &stats{out: json.NewEncoder(os.Stdout), serials: map[string]*serialSeen{}, last: make([]string, *n)}
	stop := make(chan struct{})
	var once sync.Once
	end := func() { once.Do(func() { close(stop) }) }
	if *duration > 0 {
		time.AfterFunc(*duration, end)
	} else {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			end()
		}()
	}

	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go worker(i, targets[i%len(targets)], roots, load, s, stop, &wg)
	}
	wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make([]*serialSeen, 0, len(s.order))
	for _, serial := range s.order {
		seen = append(seen, s.serials[serial])
	}
	sort.SliceStable(seen, func(i, j int) bool { return seen[i].FirstMono < seen[j].FirstMono })
	s.emit(map[string]interface{}{
		"event":              "summary",
		"mode":               mode,
		"goroutines":         *n,
		"elapsed_s":          time.Since(start).Seconds(),
		"loads":              s.loads,
		"handshakes":         s.handshakes,
		"read_failures":      s.readFailures,
		"parse_failures":     s.parseFailures,
		"handshake_failures": s.handshakeFailures,
		"failures":           s.readFailures + s.parseFailures + s.handshakeFailures,
		"mismatches":         s.mismatches,
		"errors":             s.errors,
		"serials":            seen,
		"last_serials":       s.last,
	})
}
