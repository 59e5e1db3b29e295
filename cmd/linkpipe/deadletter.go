package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/linkpipe/linkpipe/internal/bus"
	"github.com/linkpipe/linkpipe/internal/worker"
)

const deadletterUsage = `usage:
  linkpipe deadletter list [--source mail|actions]
  linkpipe deadletter replay <seq|id>... | --all [--source mail|actions]

list prints every dead letter (DEADLETTER stream): its sequence, when it was
dead-lettered, its original subject, its id (mail id or event id) and why.
replay re-publishes each named letter (by sequence, mail id or event id) to
its original subject and removes it from DEADLETTER; a mail command's
mail.cmd.<id> and mail.done.<id> are purged first so it is sent again. Both
need admin credentials (NATS_CREDS / NATS_NKEY of the admin role).
`

func runDeadletter(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	switch {
	case len(args) == 0, args[0] == "-h", args[0] == "-help", args[0] == "--help", args[0] == "help":
		fmt.Fprint(stdout, deadletterUsage)
		return flag.ErrHelp
	case args[0] != "list" && args[0] != "replay":
		return worker.BadConfig(fmt.Errorf("linkpipe deadletter: unknown command %q\n%s", args[0], deadletterUsage))
	}
	cmd := args[0]
	fs := flag.NewFlagSet("linkpipe deadletter "+cmd, flag.ContinueOnError)
	fs.SetOutput(stdout)
	nf := addNATSFlags(fs)
	source := fs.String("source", "", "only dead letters of this source: mail or actions (deadletter.<source>)")
	all := false
	if cmd == "replay" {
		fs.BoolVar(&all, "all", false, "replay every replayable dead letter (of --source)")
	}
	fs.Usage = func() {
		fmt.Fprint(stdout, deadletterUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return worker.BadConfig(err)
	}
	names := fs.Args()
	if cmd == "list" && len(names) > 0 {
		return worker.BadConfig(fmt.Errorf("linkpipe deadletter list: unexpected %q", names[0]))
	}
	if cmd == "replay" && all == (len(names) > 0) {
		fs.Usage()
		return worker.BadConfig(errors.New("linkpipe deadletter replay: name dead letters (sequence, mail id or event id) or give --all"))
	}
	filter := ""
	if *source != "" {
		filter = bus.DeadLetterPrefix + *source
	}
	co, err := nf.options("linkpipe deadletter", "deadletter", getenv)
	if err != nil {
		return err
	}
	nc, js, err := bus.Connect(co)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	letters, err := bus.DeadLetters(ctx, js, filter)
	if err != nil {
		return fmt.Errorf("linkpipe deadletter: %w", err)
	}
	if cmd == "list" {
		printLetters(stdout, letters)
		return nil
	}
	todo := letters
	if !all {
		if todo, err = pick(letters, names); err != nil {
			return fmt.Errorf("linkpipe deadletter replay: %w", err)
		}
	}
	var failed []error
	for i := range todo {
		l := &todo[i]
		if all && l.Replayable() != nil {
			fmt.Fprintf(stdout, "skipped %d %s: %v\n", l.Seq, l.Source, l.Replayable())
			continue
		}
		if err := bus.Replay(ctx, js, l); err != nil {
			failed = append(failed, err)
			fmt.Fprintf(stdout, "failed %d %s: %v\n", l.Seq, l.Source, err)
			continue
		}
		fmt.Fprintf(stdout, "replayed %d %s\n", l.Seq, l.Source)
	}
	if len(failed) > 0 {
		return fmt.Errorf("linkpipe deadletter replay: %d of %d failed: %w", len(failed), len(todo), errors.Join(failed...))
	}
	return nil
}

// pick returns the letters named by sequence, mail id or event id, in the
// order named; a name that matches none is an error.
func pick(letters []bus.Letter, names []string) ([]bus.Letter, error) {
	var out []bus.Letter
	seen := map[uint64]bool{}
	for _, name := range names {
		seq, numErr := strconv.ParseUint(name, 10, 64)
		found := false
		for _, l := range letters {
			if (numErr == nil && l.Seq == seq) || l.ID() == name || l.SourceMsgID == name {
				found = true
				if !seen[l.Seq] {
					seen[l.Seq] = true
					out = append(out, l)
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("no dead letter %q", name)
		}
	}
	return out, nil
}

func printLetters(w io.Writer, letters []bus.Letter) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tSUBJECT\tID\tREASON")
	for _, l := range letters {
		id := l.ID()
		if id == "" {
			id = "-"
		}
		reason := strings.Join(strings.Fields(l.Reason), " ")
		if l.Truncated {
			reason += " (cut: not replayable)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", l.Seq, l.Time.UTC().Format(time.RFC3339), l.Source, id, reason)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d dead letter(s)\n", len(letters))
}
