package main

import (
	"context"
	"fmt"

	"github.com/linkpipe/linkpipe/internal/mail"
	"github.com/linkpipe/linkpipe/internal/mailer"
	"github.com/linkpipe/linkpipe/internal/pace"
)

// gatedSender keeps at most what the pace needs on the wire to SES (a
// pace.Gate around each call): a request on the wire when the mailer dies
// is sent again by the survivor, so fewer in flight means fewer
// duplicates after a crash.
type gatedSender struct {
	next mailer.Sender
	gate *pace.Gate
}

func (s gatedSender) Send(ctx context.Context, m *mail.Message) (string, error) {
	done, err := s.gate.Acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("%w: %w", mail.ErrTransient, err) // not sent: retried
	}
	defer done()
	return s.next.Send(ctx, m)
}
