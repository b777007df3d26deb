package broker

import (
	"context"
	"fmt"
)

// AdminServer is implemented by transports that serve a service instance's
// admin requests — its dead letters, its stats, its manifest — so that
// herald's CLI and console reach every service through the broker, with
// the broker's URL and no database credentials.
type AdminServer interface {
	// ServeAdmin serves a's endpoints until stop is called. Requests to a
	// service go to one of its instances.
	ServeAdmin(a AdminService) (stop func() error, err error)
}

// AdminClient is implemented by transports that send admin requests to the
// services AdminServer serves.
type AdminClient interface {
	// AdminRequest sends req to endpoint of service and returns the reply;
	// an endpoint's error comes back as an *AdminError.
	AdminRequest(ctx context.Context, service, endpoint string, req []byte) ([]byte, error)
}

// AdminInstance is a running service instance that answers admin requests.
type AdminInstance struct {
	Service, Instance, Version string
	Endpoints                  []string // the subjects (or names) of its endpoints
}

// AdminService is one service instance's admin endpoints.
type AdminService struct {
	Service     string
	Instance    string
	Version     string // the service's version; "" when it has none
	Description string
	Endpoints   []AdminEndpoint
}

// AdminEndpoint is one admin request a service answers.
type AdminEndpoint struct {
	// Name is the endpoint's name, dotted: "dlq.list".
	Name string
	// Handle answers one request. An *AdminError it returns reaches the
	// client with its code; any other error as code 500.
	Handle func(ctx context.Context, req []byte) ([]byte, error)
}

// AdminError is an admin endpoint's error: a code in the manner of HTTP's
// (400: the request is wrong, 404: no such thing, 500: the service failed)
// and a message that names what is wrong.
type AdminError struct {
	Code    int
	Message string
}

func (e *AdminError) Error() string { return fmt.Sprintf("%s (%d)", e.Message, e.Code) }
