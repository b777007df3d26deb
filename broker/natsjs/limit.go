package natsjs

import (
	"errors"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/envelope"
)

var _ broker.Limiter = (*Broker)(nil)

// MaxEventSize is the server's max_payload, which the server announced when
// the connection was made (the nats-server default is 1 MiB). NATS counts a
// message's header bytes against it together with its data: nats.go refuses
// a larger message before sending it (nats.ErrMaxPayload), and the server
// would too. It implements broker.Limiter.
func (b *Broker) MaxEventSize() int {
	if b.nc == nil {
		return 0
	}
	return int(min(b.nc.MaxPayload(), maxStoredMessage))
}

// maxStoredMessage bounds what a JetStream file store keeps as one message:
// it refuses records over 32 MiB ("message too large"), record framing and
// the subject included; the margin covers a subject of the longest type
// (with WithPartitions, event and replay subjects carry the partition too:
// at most 4 bytes more). max_payload itself counts headers and data only,
// not the subject, so partitions change no EventSize.
// A server whose max_payload is above it (up to 64 MiB) would accept a
// larger publish and then refuse to store it.
const maxStoredMessage = 32<<20 - 64<<10

// nuidLen is the length of a NUID: the unique suffix of a replay's
// Nats-Msg-Id and the id of an atomic batch.
var nuidLen = len(nuid.Next())

// Header lines nats.go adds around a message's headers: the status line
// "NATS/1.0\r\n" and the empty line that ends them.
const hdrFraming = len("NATS/1.0\r\n") + len("\r\n")

// headerLine is the size of one header "key: value\r\n" as nats.go encodes it.
func headerLine(k string, vlen int) int { return len(k) + len(": ") + vlen + len("\r\n") }

// EventSize is the number of bytes e counts against MaxEventSize: its data
// plus its headers exactly as nats.go encodes them (the CloudEvents
// attributes and Nats-Msg-Id), for the larger of the two messages the broker
// sends for e: a publish, which with atomic batches also carries the batch
// headers, and a replay to one subscription, whose Nats-Msg-Id is longer. So
// an event within the limit can be both published and replayed. It
// implements broker.Limiter.
func (b *Broker) EventSize(e *envelope.Envelope) int {
	n := len(e.Data) + hdrFraming
	for k, v := range envelope.BinaryHeaders(e) {
		n += headerLine(k, len(v))
	}
	publish := headerLine(jetstream.MsgIDHeader, len(e.ID))
	if b.cfg.atomicBatches {
		publish += headerLine(hdrBatchID, nuidLen) + headerLine(hdrBatchSeq, len(strconv.Itoa(maxAtomicBatch))) +
			headerLine(hdrBatchCommit, 1)
	}
	replay := headerLine(jetstream.MsgIDHeader, len(e.ID)+len(":replay:")+nuidLen)
	return n + max(publish, replay)
}

// rejected reports whether a publish that failed with err failed for good:
// this event, sent again unchanged, would fail the same way (see
// broker.ErrRejected).
func rejected(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrBadHeaderMsg) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jsErrCodeStreamHeaderExceedsMaximum:
			return true
		case jsErrCodeStreamStoreFailed:
			// The store's refusal of a message over its record limit; other
			// store failures (a full disk, say) are worth retrying.
			return strings.Contains(apiErr.Description, "message too large")
		}
	}
	return false
}

// jsErrCodeStreamStoreFailed is the server's "{err}" of a store that did not
// take a message (JSStreamStoreFailedF, a 503).
const jsErrCodeStreamStoreFailed jetstream.ErrorCode = 10077

// jsErrCodeStreamHeaderExceedsMaximum is the server's error for a message
// whose headers exceed 64 KiB (nats.go has no constant for it).
const jsErrCodeStreamHeaderExceedsMaximum jetstream.ErrorCode = 10097
