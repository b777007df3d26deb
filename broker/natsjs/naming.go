package natsjs

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/heraldhq/herald/envelope"
)

// Subject kind tokens.
const (
	tokInt = "int"
	tokNtf = "ntf"
	tokDLQ = "dlq"
	tokRpl = "rpl"
)

// names holds the subjects and stream names derived from the prefix and
// the number of partitions.
type names struct {
	prefix     string
	partitions int    // at least 1
	intStream  string // <PREFIX>_INT: the integration stream with one partition, and the base of the others' names
	ntfStream  string
	dlqStream  string
}

func newNames(prefix string, partitions int) names {
	up := strings.ToUpper(strings.ReplaceAll(prefix, ".", "_"))
	return names{
		prefix:     prefix,
		partitions: max(partitions, 1),
		intStream:  up + "_INT",
		ntfStream:  up + "_NTF",
		dlqStream:  up + "_DLQ",
	}
}

// partitioned reports whether integration events are spread over more than
// one partition: then their streams, subjects and consumers carry the
// partition; with one they keep the names they had before partitions
// existed.
func (n names) partitioned() bool { return n.partitions > 1 }

// intStreamOf returns the stream of integration partition p: <PREFIX>_INT
// with one partition, <PREFIX>_INT_<p> with more.
func (n names) intStreamOf(p int) string {
	if !n.partitioned() {
		return n.intStream
	}
	return n.intStream + "_" + strconv.Itoa(p)
}

// intStreams returns the streams of every integration partition.
func (n names) intStreams() []string {
	out := make([]string, n.partitions)
	for p := range out {
		out[p] = n.intStreamOf(p)
	}
	return out
}

// partitionOf returns the partition of events of kind k and partition key
// key: PartitionOf for integration events, 0 for notifications (one stream).
func (n names) partitionOf(k envelope.Kind, key string) int {
	if k != envelope.KindIntegration {
		return 0
	}
	return PartitionOf(key, n.partitions)
}

// partitionToken returns "<p>." for an integration subject of a partitioned
// system, "" otherwise.
func (n names) partitionToken(t string, p int) string {
	if t != tokInt || !n.partitioned() {
		return ""
	}
	return strconv.Itoa(p) + "."
}

// durable returns the durable consumer name of partition p of a
// subscription of kind k: ConsumerName, with "_p<p>" appended for an
// integration subscription of a partitioned system.
func (n names) durable(k envelope.Kind, service, subscription string, p int) string {
	name := ConsumerName(service, subscription)
	if k != envelope.KindIntegration || !n.partitioned() {
		return name
	}
	return name + "_p" + strconv.Itoa(p)
}

// kindToken returns the subject token of k, or an error for a domain or
// unknown kind.
func kindToken(k envelope.Kind) (string, error) {
	switch k {
	case envelope.KindIntegration:
		return tokInt, nil
	case envelope.KindNotification:
		return tokNtf, nil
	case envelope.KindDomain:
		return "", errors.New("domain events stay inside their service and never go on the broker")
	default:
		return "", fmt.Errorf("unknown event kind %q", k)
	}
}

// stream returns the stream that holds events of kind k in partition p
// (p is ignored for notifications).
func (n names) stream(k envelope.Kind, p int) (string, error) {
	t, err := kindToken(k)
	if err != nil {
		return "", err
	}
	if t == tokInt {
		return n.intStreamOf(p), nil
	}
	return n.ntfStream, nil
}

// eventSubject returns <prefix>.<int|ntf>.<type>, or with several
// partitions <prefix>.int.<p>.<type> for an integration event of partition
// p.
func (n names) eventSubject(k envelope.Kind, typ string, p int) (string, error) {
	t, err := kindToken(k)
	if err != nil {
		return "", err
	}
	if err := validType(typ); err != nil {
		return "", err
	}
	return n.prefix + "." + t + "." + n.partitionToken(t, p) + typ, nil
}

// replaySubject returns <prefix>.rpl.<int|ntf>.<consumer>, or with several
// partitions <prefix>.rpl.int.<p>.<consumer> for partition p of an
// integration subscription; consumer is the subscription's ConsumerName.
func (n names) replaySubject(k envelope.Kind, consumer string, p int) (string, error) {
	t, err := kindToken(k)
	if err != nil {
		return "", err
	}
	return n.prefix + "." + tokRpl + "." + t + "." + n.partitionToken(t, p) + consumer, nil
}

// dlqSubject returns <prefix>.dlq.<service>.<subscription>, each name made a
// single safe subject token.
func (n names) dlqSubject(service, subscription string) string {
	return n.prefix + "." + tokDLQ + "." + safeToken(service) + "." + safeToken(subscription)
}

// validType reports whether typ is a dotted event type of lower-case letters,
// digits, '-' and '_'.
func validType(typ string) error {
	if typ == "" {
		return errors.New("empty event type")
	}
	if len(typ) > 200 {
		return fmt.Errorf("event type %.40q... is longer than 200 bytes", typ)
	}
	prevDot := true
	for i := 0; i < len(typ); i++ {
		c := typ[i]
		switch {
		case c == '.':
			if prevDot {
				return fmt.Errorf("event type %q has an empty token (leading, trailing or double '.')", typ)
			}
			prevDot = true
			continue
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("event type %q: character %q not allowed; use lower-case letters, digits, '.', '-' and '_' (no spaces or wildcards)", typ, c)
		}
		prevDot = false
	}
	if prevDot {
		return fmt.Errorf("event type %q has an empty token (leading, trailing or double '.')", typ)
	}
	return nil
}

// validPrefix accepts dotted tokens of letters, digits, '-' and '_'.
func validPrefix(p string) error {
	if p == "" {
		return errors.New("empty prefix")
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "" {
			return errors.New("empty token")
		}
		for i := 0; i < len(tok); i++ {
			if !plainChar(tok[i]) && tok[i] != '_' {
				return fmt.Errorf("character %q not allowed", tok[i])
			}
		}
	}
	return nil
}

func plainChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

// validName checks a service or subscription name.
func validName(what, s string) error {
	if s == "" {
		return fmt.Errorf("empty %s name", what)
	}
	if len(s) > 100 {
		return fmt.Errorf("%s name %.40q... is longer than 100 bytes", what, s)
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("%s name %q contains a space or control character", what, s)
		}
	}
	return nil
}

// safeToken maps s onto one subject token: characters other than letters,
// digits, '-' and '_' become '_'.
func safeToken(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !plainChar(c) && c != '_' {
			b[i] = '_'
		}
	}
	return string(b)
}

// ConsumerName returns the durable consumer name of a subscription:
// "<service>_<subscription>" when both are made of letters, digits and '-';
// otherwise every other character becomes '_' and a hash of the two original
// names is appended, so that two different subscriptions never share a
// consumer.
func ConsumerName(service, subscription string) string {
	clean := true
	for _, s := range []string{service, subscription} {
		for i := 0; i < len(s); i++ {
			if !plainChar(s[i]) {
				clean = false
			}
		}
	}
	name := safeToken(service) + "_" + safeToken(subscription)
	if clean {
		return name
	}
	h := fnv.New64a()
	h.Write([]byte(service))
	h.Write([]byte{0})
	h.Write([]byte(subscription))
	return fmt.Sprintf("%s_%016x", name, h.Sum64())
}

// PartitionOf returns the partition, from 0 to n-1, of the integration
// events of partition key key when there are n partitions: the 32-bit
// FNV-1a hash of the key's bytes modulo n. The function is part of the
// wire contract (services in other languages compute the same); keyless
// events (key "") are in partition 0.
func PartitionOf(key string, n int) int {
	if key == "" || n <= 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(n))
}
