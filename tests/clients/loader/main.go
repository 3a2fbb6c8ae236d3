// Command loader is the simplest Go consumer of the mount: it loads a client
// certificate and key by path with tls.LoadX509KeyPair, as a Go service does at
// start-up, and makes one mTLS GET to a server that demands a client
// certificate (openssl s_server -Verify 1 -www in the tests).
//
// It prints one JSON line and exits 0 when the load and the GET both
// succeeded, 1 otherwise.
//
//	loader -crt CRT -key KEY -url https://127.0.0.1:PORT/ -ca SERVER_CA
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

type result struct {
	OK      bool   `json:"ok"`
	Serial  string `json:"serial,omitempty"`
	Subject string `json:"subject,omitempty"`
	Status  int    `json:"status,omitempty"`
	// TLSVersion is the negotiated protocol, as Go names it.
	TLSVersion string `json:"tls_version,omitempty"`
	// BodyBytes is the size of the page the server sent back.
	BodyBytes int `json:"body_bytes,omitempty"`
	// ServerSawSerial is the serial of the client certificate that the
	// server's page shows (s_server -www prints the peer certificate last).
	ServerSawSerial string `json:"server_saw_serial,omitempty"`
	Stage           string `json:"stage,omitempty"`
	Error           string `json:"error,omitempty"`
}

// serialText formats a serial number as cmkcert prints it: lowercase hex
// bytes separated by colons, without leading zero bytes.
func serialText(c *x509.Certificate) string {
	b := c.SerialNumber.Bytes()
	parts := make([]string, len(b))
	for i, v := range b {
		parts[i] = fmt.Sprintf("%02x", v)
	}
	return strings.Join(parts, ":")
}

// peerSerial finds the last PEM certificate in an s_server -www page: the
// client certificate the server received.
func peerSerial(page []byte) string {
	var last *x509.Certificate
	for rest := page; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && block.Type == "CERTIFICATE" {
			last = c
		}
	}
	if last == nil {
		return ""
	}
	return serialText(last)
}

// versionName names a TLS version (tls.VersionName is newer than Go 1.19).
func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func finish(r result) {
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	if r.OK {
		os.Exit(0)
	}
	os.Exit(1)
}

func main() {
	crt := flag.String("crt", "", "client certificate file (PEM; leaf first, chain may follow)")
	key := flag.String("key", "", "private key file (PEM)")
	url := flag.String("url", "", "URL to GET with the client certificate")
	ca := flag.String("ca", "", "CA file that verifies the server")
	timeout := flag.Duration("timeout", 10*time.Second, "time allowed for the GET")
	flag.Parse()
	if *crt == "" || *key == "" || *url == "" || *ca == "" {
		fmt.Fprintln(os.Stderr, "usage: loader -crt CRT -key KEY -url URL -ca SERVER_CA")
		os.Exit(2)
	}

	var r result
	pair, err := tls.LoadX509KeyPair(*crt, *key)
	if err != nil {
		r.Stage, r.Error = "load", err.Error()
		finish(r)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		r.Stage, r.Error = "parse", err.Error()
		finish(r)
	}
	r.Serial, r.Subject = serialText(leaf), leaf.Subject.String()

	caPEM, err := os.ReadFile(*ca)
	if err != nil {
		r.Stage, r.Error = "server-ca", err.Error()
		finish(r)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		r.Stage, r.Error = "server-ca", "no certificate in "+*ca
		finish(r)
	}
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{
				RootCAs:      roots,
				Certificates: []tls.Certificate{pair},
			},
		},
	}
	resp, err := client.Get(*url)
	if err != nil {
		r.Stage, r.Error = "get", err.Error()
		finish(r)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r.Status, r.BodyBytes = resp.StatusCode, len(body)
	if resp.TLS != nil {
		r.TLSVersion = versionName(resp.TLS.Version)
	}
	if err != nil {
		r.Stage, r.Error = "read", err.Error()
		finish(r)
	}
	r.ServerSawSerial = peerSerial(body)
	r.OK = resp.StatusCode == http.StatusOK
	if !r.OK {
		r.Stage, r.Error = "status", resp.Status
	}
	finish(r)
}
