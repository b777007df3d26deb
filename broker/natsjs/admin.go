package natsjs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Admin requests travel as NATS services (nats.go's micro package), so
// `nats micro ls` lists every running herald service instance: one micro
// service per instance, named "herald-<service>", its endpoints on
// <prefix>.admin.<service>.<endpoint> in one queue group, so a request
// reaches one instance of the service. The replies of an endpoint's error
// carry micro's error headers (Nats-Service-Error-Code and
// Nats-Service-Error).

// adminSubject is the subject of endpoint of service.
func (n names) adminSubject(service, endpoint string) string {
	return n.prefix + ".admin." + safeToken(service) + "." + endpoint
}

// microVersion is what micro accepts as a version: a semantic version.
var microVersion = regexp.MustCompile(`^v?((0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?)$`)

// ServeAdmin serves a's endpoints as a NATS micro service until stop.
func (b *Broker) ServeAdmin(a broker.AdminService) (stop func() error, err error) {
	if err := validName("service", a.Service); err != nil {
		return nil, invalid("ServeAdmin: %v", err)
	}
	version := "0.0.0"
	if m := microVersion.FindStringSubmatch(a.Version); m != nil {
		version = m[1]
	}
	svc, err := micro.AddService(b.nc, micro.Config{
		Name:        "herald-" + safeToken(a.Service),
		Version:     version,
		Description: a.Description,
		Metadata:    map[string]string{"herald.service": a.Service, "herald.instance": a.Instance, "herald.version": a.Version, "herald.prefix": b.names.prefix},
	})
	if err != nil {
		return nil, fmt.Errorf("herald/natsjs: admin service of %s: %w", a.Service, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	for _, e := range a.Endpoints {
		handle := e.Handle
		err := svc.AddEndpoint(strings.ReplaceAll(e.Name, ".", "-"), micro.ContextHandler(ctx, func(ctx context.Context, req micro.Request) {
			resp, err := handle(ctx, req.Data())
			if err == nil {
				_ = req.Respond(resp)
				return
			}
			ae := &broker.AdminError{Code: 500, Message: err.Error()}
			errors.As(err, &ae)
			_ = req.Error(strconv.Itoa(ae.Code), ae.Message, nil)
		}), micro.WithEndpointSubject(b.names.adminSubject(a.Service, e.Name)))
		if err != nil {
			cancel()
			_ = svc.Stop()
			return nil, fmt.Errorf("herald/natsjs: admin endpoint %s of %s: %w", e.Name, a.Service, err)
		}
	}
	return func() error {
		cancel()
		return svc.Stop()
	}, nil
}

// ErrNoAdmin is returned by AdminRequest when no instance of the service
// answers: none runs, or none reached this broker.
var ErrNoAdmin = errors.New("herald/natsjs: no instance of the service answers admin requests")

// AdminRequest sends req to endpoint of service and returns the reply; an
// endpoint's error comes back as a *broker.AdminError.
func (b *Broker) AdminRequest(ctx context.Context, service, endpoint string, req []byte) ([]byte, error) {
	msg, err := b.nc.RequestWithContext(ctx, b.names.adminSubject(service, endpoint), req)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, fmt.Errorf("%w: %s (is it running, with the prefix %q?)", ErrNoAdmin, service, b.names.prefix)
	case err != nil:
		return nil, fmt.Errorf("herald/natsjs: admin request %s to %s: %w", endpoint, service, err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		n, _ := strconv.Atoi(code)
		return nil, &broker.AdminError{Code: n, Message: msg.Header.Get(micro.ErrorHeader)}
	}
	return msg.Data, nil
}

// AdminInstances lists the herald service instances that answer admin
// requests, as `nats micro ls` does: it asks every micro service for its
// info and gathers the herald ones (of this broker's prefix) that answer
// within wait.
func (b *Broker) AdminInstances(ctx context.Context, wait time.Duration) ([]broker.AdminInstance, error) {
	inbox := b.nc.NewRespInbox()
	replies := make(chan *nats.Msg, 256)
	sub, err := b.nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return nil, fmt.Errorf("herald/natsjs: admin instances: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	subject, err := micro.ControlSubject(micro.InfoVerb, "", "")
	if err != nil {
		return nil, err
	}
	if err := b.nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("herald/natsjs: admin instances: %w", err)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var out []broker.AdminInstance
	for {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-timer.C:
			slices.SortFunc(out, func(a, b broker.AdminInstance) int {
				return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Instance, b.Instance))
			})
			return out, nil
		case m := <-replies:
			var info micro.Info
			if json.Unmarshal(m.Data, &info) != nil || info.Metadata["herald.prefix"] != b.names.prefix {
				continue
			}
			in := broker.AdminInstance{Service: info.Metadata["herald.service"], Instance: info.Metadata["herald.instance"],
				Version: info.Metadata["herald.version"]}
			for _, e := range info.Endpoints {
				in.Endpoints = append(in.Endpoints, e.Subject)
			}
			out = append(out, in)
		}
	}
}
