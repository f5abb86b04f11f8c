package daemon

// The edit intake: a goroutine of the NATS front end that consumes the
// JetStream edit stream (protocol.EditsStream) into the state database.
//
// Stream. With the embedded server edged owns the stream and creates or
// updates it at start: subjects edged.edits.>, file storage, message-id
// de-duplication over EditsOptions.DuplicateWindow. With an external
// server (nats.url) the stream is the operator's: edged only looks it up,
// and while it is missing (or the server has no JetStream) logs the error
// and tries again, pausing longer each time.
//
// Consumer. Each node has a durable pull consumer, edged-<node>, with
// explicit acks, unlimited redelivery after EditsOptions.AckWait, and
// several filter subjects (nats-server 2.10 or later): edged.edits.all,
// edged.edits.node.<node>, edged.edits.model.<model> for each registered
// model, and edged.edits.retract. Filtering on the server rather than
// taking all of edged.edits.> and dropping what is not ours means a node
// never receives, acknowledges or counts the other nodes' and models'
// edits, and `nats consumer info` shows its own backlog; the price is an
// update of the consumer when the registered models change, which the
// intake checks between fetches (so at least every EditsOptions.poll).
// Edits published for a model before it is registered here are not
// delivered to this node.
//
// Messages. Service.IngestEdit checks each message and commits it; only
// after that commit is the message acknowledged. A valid edit is stored as
// pending; an id stored already is acknowledged without change; an
// invalid message is recorded as rejected with the reason and terminated,
// never delivered again; a retraction marks its edit retracted. When the
// commit fails the message is not acknowledged, and JetStream delivers it
// again after AckWait, as it does after a crash.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edged/edged/protocol"
)

const (
	editsBatch      = 64               // messages one fetch may bring
	editsPoll       = 5 * time.Second  // the longest one fetch waits
	editsMaxPause   = 30 * time.Second // the longest pause between tries after a failure
	editsAPITimeout = 10 * time.Second // one JetStream API call
)

// editSink is what the intake needs of the daemon; *Service implements it.
type editSink interface {
	IngestEdit(m EditMessage) (EditResult, error)
	EditModels() []string
}

// editIntake consumes the edit stream for one node.
type editIntake struct {
	js    jetstream.JetStream
	sink  editSink
	opts  EditsOptions
	owned bool   // edged runs the server and so creates the stream
	node  string // as configured (the subject helpers escape it)
	log   *slog.Logger
}

// startEdits starts the intake; Shutdown stops it before the connection
// closes. The stream of the embedded server exists when it returns, so
// that local publishers can publish once the daemon is ready.
func (f *NATS) startEdits(ctx context.Context, be natsBackend, js jetstream.JetStream, owned bool) error {
	in := &editIntake{js: js, sink: be, opts: f.opts.Edits, owned: owned, node: be.Node(), log: f.log.With("component", "edits")}
	if in.opts.poll <= 0 {
		in.opts.poll = editsPoll
	}
	if owned {
		if err := in.ensureStream(ctx); err != nil {
			return fmt.Errorf("nats: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.stopEdits = cancel
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		keepTrying(ctx, in.log, "edit intake: retrying", in.consume)
	}()
	return nil
}

// consume sets up the stream and the consumer, then fetches until ctx
// ends or something fails.
func (in *editIntake) consume(ctx context.Context) error {
	if err := in.ensureStream(ctx); err != nil {
		return err
	}
	models := in.sink.EditModels()
	cons, err := in.ensureConsumer(ctx, models)
	if err != nil {
		return err
	}
	in.log.Info("consuming the edit stream", "stream", protocol.EditsStream, "consumer", protocol.EditsConsumer(in.node), "models", models)
	for ctx.Err() == nil {
		if now := in.sink.EditModels(); !slices.Equal(now, models) {
			if cons, err = in.ensureConsumer(ctx, now); err != nil {
				return err
			}
			models = now
			in.log.Info("edit consumer follows the registered models", "models", models)
		}
		if err := in.fetch(ctx, cons); err != nil {
			return err
		}
	}
	return nil
}

// ensureStream creates or updates the stream when edged owns the server,
// and otherwise checks that it exists.
func (in *editIntake) ensureStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, editsAPITimeout)
	defer cancel()
	if !in.owned {
		_, err := in.js.Stream(ctx, protocol.EditsStream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("the NATS server has no edit stream %s: create it on subjects %q with file storage and a duplicate window (an edged with the embedded server creates its own)", protocol.EditsStream, protocol.EditsSubjects)
		}
		if err != nil {
			return fmt.Errorf("edit stream %s: %w", protocol.EditsStream, err)
		}
		return nil
	}
	_, err := in.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        protocol.EditsStream,
		Description: "knowledge edits for edged (protocol.Edit and protocol.Retraction as JSON)",
		Subjects:    []string{protocol.EditsSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  in.opts.DuplicateWindow,
		MaxMsgSize:  protocol.MaxEditBytes,
	})
	if err != nil {
		return fmt.Errorf("creating the edit stream %s: %w", protocol.EditsStream, err)
	}
	return nil
}

// ensureConsumer creates the node's durable consumer, or updates its
// filter to models.
func (in *editIntake) ensureConsumer(ctx context.Context, models []string) (jetstream.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, editsAPITimeout)
	defer cancel()
	name := protocol.EditsConsumer(in.node)
	cons, err := in.js.CreateOrUpdateConsumer(ctx, protocol.EditsStream, jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "edged edit intake of node " + in.node,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        in.opts.AckWait,
		MaxDeliver:     -1,
		FilterSubjects: editFilter(in.node, models),
	})
	if err != nil {
		return nil, fmt.Errorf("edit consumer %s: %w", name, err)
	}
	return cons, nil
}

// editFilter lists the subjects node consumes. Models whose names escape
// to one subject token share their subject (filters must not overlap).
func editFilter(node string, models []string) []string {
	subjects := []string{protocol.EditsAllSubject, protocol.EditsNodeSubject(node), protocol.EditsRetractSubject}
	for _, m := range models {
		if s := protocol.EditsModelSubject(m); !slices.Contains(subjects, s) {
			subjects = append(subjects, s)
		}
	}
	return subjects
}

// fetch takes what the stream has, waiting at most opts.poll, and handles
// each message in stream order. The wait ends on the server (a request
// the client gave up on could still be sent messages, which would then
// wait AckWait to come again); only shutdown leaves a fetch early.
func (in *editIntake) fetch(ctx context.Context, cons jetstream.Consumer) error {
	batch, err := cons.Fetch(editsBatch, jetstream.FetchMaxWait(in.opts.poll))
	if err != nil {
		return fmt.Errorf("fetching edits: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-batch.Messages():
			if !ok {
				if err := batch.Error(); err != nil {
					return fmt.Errorf("fetching edits: %w", err)
				}
				return nil
			}
			in.handle(msg)
		}
	}
}

// handle commits one message, then acknowledges it (or terminates it when
// rejected); when the commit fails it leaves it unacknowledged, to be
// delivered again.
func (in *editIntake) handle(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		in.log.Warn("edit intake: a message without stream metadata", "subject", msg.Subject(), "err", err)
		return
	}
	seq := meta.Sequence.Stream
	res, err := in.sink.IngestEdit(EditMessage{Subject: msg.Subject(), Data: msg.Data(), Seq: seq})
	if err != nil {
		in.log.Warn("edit not stored; it will be delivered again", "seq", seq, "delivery", meta.NumDelivered, "err", err)
		return
	}
	if res.Outcome == EditRejected {
		in.log.Warn("edit rejected", "id", res.ID, "seq", seq, "subject", msg.Subject(), "reason", res.Reason)
		err = msg.TermWithReason(string(res.Reason.Code))
	} else {
		in.log.Debug("edit stored", "id", res.ID, "seq", seq, "outcome", res.Outcome)
		err = msg.Ack()
	}
	if err != nil {
		// It comes again and is found stored.
		in.log.Debug("edit intake: acknowledgement not sent", "seq", seq, "err", err)
	}
}
