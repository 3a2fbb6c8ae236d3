// Command ctlclient is a Go program calling cmkcertfs's control socket the
// way the CMK API server would: net/http with a transport that dials the
// unix socket instead of TCP.
//
// It sends one request (or -n of them at once, each on a connection of its
// own) and prints one JSON document: for each request its HTTP status,
// headers, body and how long it took; error when no answer came.  It exits
// 0 whenever it could print that, whatever the statuses.
//
//	ctlclient -socket SOCK [-body FILE | -big BYTES] [-n N] [-expect-continue] METHOD PATH
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

type result struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body"`
	Ms      float64           `json:"ms"`
	Error   string            `json:"error,omitempty"`
}

func main() {
	socket := flag.String("socket", "", "the control socket")
	bodyFile := flag.String("body", "", "send this file as the body ('-': standard input)")
	big := flag.Int("big", 0, "send a body of this many bytes")
	n := flag.Int("n", 1, "send the request this many times at once")
	expect := flag.Bool("expect-continue", false, "ask for 100-continue before sending the body")
	flag.Parse()
	if *socket == "" || flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: ctlclient -socket SOCK [-body FILE | -big BYTES] [-n N] [-expect-continue] METHOD PATH")
		os.Exit(2)
	}
	method, path := flag.Arg(0), flag.Arg(1)

	var body []byte
	switch {
	case *bodyFile == "-":
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		body = b
	case *bodyFile != "":
		b, err := os.ReadFile(*bodyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		body = b
	case *big > 0:
		body = bytes.Repeat([]byte("a"), *big)
	}

	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *socket)
		},
		// Every one of the -n requests on a connection of its own.
		DisableKeepAlives:     *n > 1,
		MaxConnsPerHost:       0,
		ExpectContinueTimeout: 10 * time.Second,
	}
	client := &http.Client{Transport: transport, Timeout: 120 * time.Second}

	one := func() result {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, "http://cmkcertfs"+path, rd)
		if err != nil {
			return result{Error: err.Error()}
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if *expect {
			req.Header.Set("Expect", "100-continue")
		}
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return result{Error: err.Error(), Ms: msSince(t0)}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		r := result{Status: resp.StatusCode, Body: string(b), Ms: msSince(t0), Headers: map[string]string{}}
		for k := range resp.Header {
			r.Headers[k] = resp.Header.Get(k)
		}
		if err != nil {
			r.Error = err.Error()
		}
		return r
	}

	out := json.NewEncoder(os.Stdout)
	if *n == 1 {
		out.Encode(one())
		return
	}
	results := make([]result, *n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			results[i] = one()
		}(i)
	}
	close(start)
	wg.Wait()
	out.Encode(results)
}

func msSince(t time.Time) float64 {
	return float64(time.Since(t).Microseconds()) / 1000.0
}
