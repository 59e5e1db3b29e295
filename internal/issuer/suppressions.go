package issuer

import (
	"context"
	"fmt"

	"github.com/linkpipe/linkpipe/events"
)

// Outcomes of actions.address.unsuppressed.
const (
	outcomeUnsuppressed  = "unsuppressed"   // the address's suppression was lifted
	outcomeNotSuppressed = "not_suppressed" // nothing to lift
)

// addressUnsuppressed handles actions.address.unsuppressed: the address's
// suppression (package suppress: a permanent bounce or a complaint) is
// lifted, for every practice (suppression is deployment-wide), and the
// lift is recorded (when, by which event id and practice). The address
// never reaches a log line.
func (i *Issuer) addressUnsuppressed(ctx context.Context, d *delivery) (result, error) {
	a := d.action.(*events.AddressUnsuppressed)
	lifted, err := i.suppressions.Lift(ctx, a.Email, a.EventID, a.PracticeID, i.clock.Now())
	if err != nil {
		return result{}, fmt.Errorf("issuer: %w", err)
	}
	if !lifted {
		d.log.Info("address was not suppressed")
		return result{outcome: outcomeNotSuppressed}, nil
	}
	d.log.Info("address suppression lifted")
	return result{outcome: outcomeUnsuppressed}, nil
}
