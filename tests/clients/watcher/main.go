// Command watcher follows files the way OpenKCM's Go services do: with
// fsnotify, on the directories that hold the files (-dir, repeatable) and on
// the files themselves (-file, repeatable), one fsnotify.Watcher for each kind.
//
// A watch on a file ends when the file it names is removed or replaced (a
// Remove event, IN_DELETE_SELF) or renamed away; the watcher then waits for the
// path to exist again (polling every 2 ms) and adds the watch anew, so it
// follows the new file behind the same name.
//
// Output, one JSON object per line, written at once:
//
//	{"event":"ready","failed":[...]}          once every watch that could be added is set
//	{"event":"fs","kind":"dir"|"file","op":"CREATE|CHMOD","name":PATH,"mono":S,"real_ns":N}
//	{"event":"rearmed","name":PATH,"mono":S}   a file watch added again after Remove/Rename
//	{"event":"error","error":TEXT}
//
// mono is CLOCK_MONOTONIC in seconds (Python's time.monotonic()).  The
// watcher runs until standard input is closed.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

type paths []string

func (p *paths) String() string     { return strings.Join(*p, ",") }
func (p *paths) Set(v string) error { *p = append(*p, v); return nil }

func mono() float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

type output struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (o *output) emit(v map[string]interface{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = o.enc.Encode(v)
}

type failure struct {
	Path  string `json:"path"`
	Error string `json:"error"`
}

func main() {
	var dirs, files paths
	flag.Var(&dirs, "dir", "directory to watch (repeatable)")
	flag.Var(&files, "file", "file to watch, re-armed after it is replaced (repeatable)")
	flag.Parse()
	if len(dirs)+len(files) == 0 {
		os.Stderr.WriteString("usage: watcher [-dir DIR]... [-file FILE]...\n")
		os.Exit(2)
	}

	out := &output{enc: json.NewEncoder(os.Stdout)}
	done := make(chan struct{})

	dw, err := fsnotify.NewWatcher()
	if err != nil {
		os.Stderr.WriteString("watcher: " + err.Error() + "\n")
		os.Exit(1)
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		os.Stderr.WriteString("watcher: " + err.Error() + "\n")
		os.Exit(1)
	}
	failed := []failure{}
	for _, d := range dirs {
		if err := dw.Add(d); err != nil {
			failed = append(failed, failure{d, err.Error()})
		}
	}
	for _, f := range files {
		if err := fw.Add(f); err != nil {
			failed = append(failed, failure{f, err.Error()})
		}
	}

	// rearm adds the watch on path again once the path names a file again.
	var rearming sync.Map
	rearm := func(path string) {
		if _, busy := rearming.LoadOrStore(path, true); busy {
			return
		}
		defer rearming.Delete(path)
		start := time.Now()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := os.Stat(path); err == nil {
				if err := fw.Add(path); err == nil {
					out.emit(map[string]interface{}{"event": "rearmed", "name": path, "mono": mono()})
					return
				}
			}
			if time.Since(start) < 2*time.Second {
				time.Sleep(2 * time.Millisecond)
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}

	follow := func(w *fsnotify.Watcher, kind string) {
		for {
			select {
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				out.emit(map[string]interface{}{"event": "fs", "kind": kind, "op": ev.Op.String(),
					"name": ev.Name, "mono": mono(), "real_ns": time.Now().UnixNano()})
				if kind == "file" && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) {
					if ev.Has(fsnotify.Rename) {
						// The watch follows the renamed inode; drop it to watch the name.
						_ = w.Remove(ev.Name)
					}
					go rearm(ev.Name)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				out.emit(map[string]interface{}{"event": "error", "error": err.Error(), "mono": mono()})
			}
		}
	}
	go follow(dw, "dir")
	go follow(fw, "file")
	out.emit(map[string]interface{}{"event": "ready", "failed": failed, "mono": mono()})

	_, _ = io.Copy(io.Discard, os.Stdin)
	close(done)
	dw.Close()
	fw.Close()
}
