package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// msgGetResponse is the JetStream API's answer to STREAM.MSG.GET.
type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// LastFromLeaderJSON is LastJSON answered by the stream's leader instead of
// any replica (no direct get). On a replicated stream a direct get may come
// from a follower that has not applied the newest write yet; the leader has
// every acknowledged write, so a decision that must see a cancel or a
// revocation the moment it is acknowledged reads this way.
//
// On a server that is not part of a cluster (nats.Conn's
// ConnectedClusterName is empty) every stream has one replica, which is
// its leader, and the read is a direct get: the leader's JetStream API
// request costs the server about twice as much (docs/performance.md), and
// the issuer makes one for every link it mints. The connection's cluster
// name is read at each call, so a client that reconnects to a clustered
// server reads from the leader again.
func (r *Reader) LastFromLeaderJSON(ctx context.Context, subj string, v any) (uint64, error) {
	if r.js.Conn().ConnectedClusterName() == "" {
		return r.LastJSON(ctx, subj, v)
	}
	req, _ := json.Marshal(map[string]string{"last_by_subj": subj})
	msg, err := r.js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+r.stream, req)
	if err != nil {
		return 0, fmt.Errorf("bus: leader get last %s: %w", subj, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("bus: leader get last %s: %w", subj, err)
	}
	if resp.Error != nil {
		if resp.Error.Code == 404 {
			return 0, fmt.Errorf("%w: %s", ErrNotFound, subj)
		}
		return 0, fmt.Errorf("bus: leader get last %s: %s (%d)", subj, resp.Error.Description, resp.Error.ErrCode)
	}
	if resp.Message == nil {
		return 0, fmt.Errorf("bus: leader get last %s: empty answer", subj)
	}
	if err := json.Unmarshal(resp.Message.Data, v); err != nil {
		return 0, fmt.Errorf("bus: decode %s@%d: %w", subj, resp.Message.Sequence, err)
	}
	return resp.Message.Sequence, nil
}
