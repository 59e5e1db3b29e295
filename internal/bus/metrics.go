package bus

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register is every worker's one policy for its metrics: it registers *c
// with reg, or, if reg already holds a collector of the same description
// (a second worker of the same kind in one process, as in tests or dev
// mode), replaces *c with that one so both share it. A nil reg registers
// nothing. Any other refusal (the same name with other labels or help) is
// an error. Join the errors of several calls with errors.Join.
func Register[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	if reg == nil {
		return nil
	}
	err := reg.Register(*c)
	if err == nil {
		return nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			*c = existing
			return nil
		}
	}
	return fmt.Errorf("bus: register metric: %w", err)
}
