package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Log keys of Ensure's lines.
const (
	KeyStream   = "stream"
	KeyConsumer = "consumer"
	KeyBucket   = "bucket"
	KeyField    = "field"
	KeyWant     = "want"
	KeyHave     = "have"
)

// Difference is one setting of an existing stream or consumer that is not
// what linkpipe would configure.
type Difference struct {
	// Of names what differs: "stream DEADLETTER", "consumer MAIL/mailer",
	// "bucket linkpipe_practices".
	Of string
	// Field is the JetStream configuration field (JSON name), e.g.
	// num_replicas, max_age.
	Field string
	// Want is what linkpipe configures, Have what the server has.
	Want, Have string
}

// BucketConfigs returns the configuration of every key-value bucket.
func BucketConfigs(o Options) []jetstream.KeyValueConfig {
	o = o.withDefaults()
	return []jetstream.KeyValueConfig{
		{
			Bucket: BucketPractices, History: 5, Replicas: o.Replicas,
			Description: "practice settings, newest wins (actions.practice.updated)",
		},
		{
			Bucket: BucketEventClaims, History: 1, Replicas: o.Replicas,
			Description: "event id -> the action (subject and client or appointment) that first used it",
		},
		{
			Bucket: BucketRecipients, History: 1, Replicas: o.Replicas,
			Description: "link id -> the address on record its emails go to",
		},
		{
			Bucket: BucketMessages, History: 1, Replicas: o.Replicas, TTL: MessagesTTL,
			Description: "SES message id -> the email it names (mail, link, practice), for delivery feedback",
		},
		{
			Bucket: BucketSuppressed, History: 1, Replicas: o.Replicas,
			Description: "hash of an address -> why nothing more is sent to it (permanent bounce, complaint)",
		},
	}
}

// Ensure is what a worker does at start: it creates every stream, consumer
// and bucket that is missing (when its credentials allow: a bare
// nats-server or the dev mode need no separate setup step) and leaves
// every existing one as it is, even when it is configured differently
// from o: each difference is logged at warn (keys KeyStream or
// KeyConsumer, KeyField, KeyWant, KeyHave) and returned. Updating is
// Setup's job (`linkpipe setup`, run with admin rights), so that one
// worker started with a wrong LINKPIPE_REPLICAS cannot rescale the
// streams, and workers need no stream-admin permission.
//
// Ensure reads each stream's and consumer's info: a worker whose
// credentials cannot read it fails (after its request times out) rather
// than running unchecked; the least-privilege configuration in docs/nats
// grants that read to every role.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options, log *slog.Logger) ([]Difference, error) {
	o = o.withDefaults()
	var all []Difference
	cons := ConsumerConfigs()
	for _, cfg := range StreamConfigs(o) {
		s, created, err := ensureStream(ctx, js, cfg)
		if err != nil {
			return all, err
		}
		if !created {
			d := StreamDiff(cfg, s.CachedInfo().Config)
			for i, x := range d {
				d[i].Of = "stream " + cfg.Name
				log.Warn("stream configured differently from linkpipe's configuration; left as it is (linkpipe setup updates it)",
					KeyStream, cfg.Name, KeyField, x.Field, KeyWant, x.Want, KeyHave, x.Have)
			}
			all = append(all, d...)
		}
		cc, ok := cons[cfg.Name]
		if !ok {
			continue
		}
		c, err := s.Consumer(ctx, cc.Durable)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			cc.Replicas = 0 // inherit the stream's
			if _, err := s.CreateConsumer(ctx, cc); err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
				return all, fmt.Errorf("bus: create consumer %s on %s: %w", cc.Durable, cfg.Name, err)
			}
		case err != nil:
			return all, fmt.Errorf("bus: consumer %s on %s: %w", cc.Durable, cfg.Name, err)
		default:
			d := ConsumerDiff(cc, c.CachedInfo().Config)
			for i, x := range d {
				d[i].Of = "consumer " + cfg.Name + "/" + cc.Durable
				log.Warn("consumer configured differently from linkpipe's configuration; left as it is (linkpipe setup updates it)",
					KeyStream, cfg.Name, KeyConsumer, cc.Durable, KeyField, x.Field, KeyWant, x.Want, KeyHave, x.Have)
			}
			all = append(all, d...)
		}
	}
	for _, b := range BucketConfigs(o) {
		kv, err := js.KeyValue(ctx, b.Bucket)
		switch {
		case errors.Is(err, jetstream.ErrBucketNotFound):
			if _, err := js.CreateKeyValue(ctx, b); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
				return all, fmt.Errorf("bus: create bucket %s: %w", b.Bucket, err)
			}
		case err != nil:
			return all, fmt.Errorf("bus: bucket %s: %w", b.Bucket, err)
		default:
			st, err := kv.Status(ctx)
			if err != nil {
				return all, fmt.Errorf("bus: bucket %s: %w", b.Bucket, err)
			}
			var d []Difference
			if st.History() != int64(b.History) {
				d = append(d, Difference{"bucket " + b.Bucket, "history", strconv.Itoa(int(b.History)), strconv.FormatInt(st.History(), 10)})
			}
			if kvs, ok := st.(*jetstream.KeyValueBucketStatus); ok && kvs.StreamInfo().Config.Replicas != b.Replicas {
				d = append(d, Difference{"bucket " + b.Bucket, "num_replicas", strconv.Itoa(b.Replicas), strconv.Itoa(kvs.StreamInfo().Config.Replicas)})
			}
			for _, x := range d {
				log.Warn("bucket configured differently from linkpipe's configuration; left as it is (linkpipe setup updates it)",
					KeyBucket, b.Bucket, KeyField, x.Field, KeyWant, x.Want, KeyHave, x.Have)
			}
			all = append(all, d...)
		}
	}
	return all, nil
}

// ensureStream returns the stream, creating it when it is missing.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, bool, error) {
	s, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return s, false, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, false, fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
	}
	s, err = js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another worker created it in between.
		s, err = js.Stream(ctx, cfg.Name)
		if err != nil {
			return nil, false, fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
		}
		return s, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("bus: stream %s is missing and could not be created (run linkpipe setup with admin credentials): %w", cfg.Name, err)
	}
	return s, true, nil
}

// limit normalises a JetStream limit: 0 and -1 both mean "none".
func limit(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return strconv.FormatInt(n, 10)
}

func dur(d time.Duration) string {
	if d <= 0 {
		return "unlimited"
	}
	return d.String()
}

// StreamDiff lists the fields in which have (a stream's configuration on
// the server) differs from want (StreamConfigs) in a way that matters to
// linkpipe: subjects, retention, limits, replicas, discard policy,
// dedupe window, direct get, delete/purge protection, schedules, TTLs and
// rollups. A dedupe window want leaves unset is not compared (the server
// picks it).
func StreamDiff(want, have jetstream.StreamConfig) []Difference {
	var d []Difference
	add := func(field, w, h string) {
		if w != h {
			d = append(d, Difference{Field: field, Want: w, Have: h})
		}
	}
	ws, hs := slices.Clone(want.Subjects), slices.Clone(have.Subjects)
	slices.Sort(ws)
	slices.Sort(hs)
	add("subjects", strings.Join(ws, ","), strings.Join(hs, ","))
	add("retention", want.Retention.String(), have.Retention.String())
	add("max_age", dur(want.MaxAge), dur(have.MaxAge))
	add("num_replicas", strconv.Itoa(max(want.Replicas, 1)), strconv.Itoa(max(have.Replicas, 1)))
	add("max_msgs_per_subject", limit(want.MaxMsgsPerSubject), limit(have.MaxMsgsPerSubject))
	add("max_msg_size", limit(int64(want.MaxMsgSize)), limit(int64(have.MaxMsgSize)))
	add("discard", want.Discard.String(), have.Discard.String())
	add("discard_new_per_subject", strconv.FormatBool(want.DiscardNewPerSubject), strconv.FormatBool(have.DiscardNewPerSubject))
	if want.Duplicates > 0 {
		add("duplicate_window", dur(want.Duplicates), dur(have.Duplicates))
	}
	add("allow_direct", strconv.FormatBool(want.AllowDirect), strconv.FormatBool(have.AllowDirect))
	add("deny_delete", strconv.FormatBool(want.DenyDelete), strconv.FormatBool(have.DenyDelete))
	add("deny_purge", strconv.FormatBool(want.DenyPurge), strconv.FormatBool(have.DenyPurge))
	add("allow_rollup_hdrs", strconv.FormatBool(want.AllowRollup), strconv.FormatBool(have.AllowRollup))
	add("allow_msg_schedules", strconv.FormatBool(want.AllowMsgSchedules), strconv.FormatBool(have.AllowMsgSchedules))
	add("allow_msg_ttl", strconv.FormatBool(want.AllowMsgTTL), strconv.FormatBool(have.AllowMsgTTL))
	return d
}

// ConsumerDiff lists the fields in which have (a durable consumer on the
// server) differs from want (ConsumerConfigs): its filter, ack policy, ack
// wait, max ack pending and deliver policy.
func ConsumerDiff(want, have jetstream.ConsumerConfig) []Difference {
	var d []Difference
	add := func(field, w, h string) {
		if w != h {
			d = append(d, Difference{Field: field, Want: w, Have: h})
		}
	}
	filters := func(c jetstream.ConsumerConfig) string {
		f := slices.Clone(c.FilterSubjects)
		if c.FilterSubject != "" {
			f = append(f, c.FilterSubject)
		}
		slices.Sort(f)
		return strings.Join(f, ",")
	}
	add("filter_subjects", filters(want), filters(have))
	add("ack_policy", want.AckPolicy.String(), have.AckPolicy.String())
	add("ack_wait", dur(want.AckWait), dur(have.AckWait))
	add("max_ack_pending", strconv.Itoa(want.MaxAckPending), strconv.Itoa(have.MaxAckPending))
	add("deliver_policy", want.DeliverPolicy.String(), have.DeliverPolicy.String())
	return d
}

// EnsureWhenReady runs Ensure, retrying every second while NATS is not
// reachable yet (workers may start before the server), until ctx ends.
// Each failed attempt is logged at warn level.
func EnsureWhenReady(ctx context.Context, js jetstream.JetStream, o Options, log *slog.Logger) error {
	return whenReady(ctx, log, func(ctx context.Context) error {
		_, err := Ensure(ctx, js, o, log)
		return err
	})
}

func whenReady(ctx context.Context, log *slog.Logger, f func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(actx)
		cancel()
		if err == nil {
			return nil
		}
		log.Warn("waiting for NATS", keyErr, err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}
