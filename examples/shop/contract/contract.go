// Package contract holds the shop's public contracts: the integration
// events services exchange. Domain events stay private to each service;
// these are the versioned promises between them.
package contract

import "github.com/heraldhq/herald"

// Item is one line of an order.
type Item struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
	PriceCts  int    `json:"price_cents"`
}

// OrderConfirmed: orders accepted an order.
type OrderConfirmed struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Email      string `json:"email"`
	Items      []Item `json:"items"`
	TotalCts   int    `json:"total_cents"`
}

// ShipmentScheduled: shipping planned the delivery of an order.
type ShipmentScheduled struct {
	OrderID    string `json:"order_id"`
	ShipmentID string `json:"shipment_id"`
	CustomerID string `json:"customer_id"`
	ETA        string `json:"eta"` // RFC 3339
}

// ShipmentDispatched: the parcel left the warehouse.
type ShipmentDispatched struct {
	OrderID    string `json:"order_id"`
	ShipmentID string `json:"shipment_id"`
	CustomerID string `json:"customer_id"`
	Carrier    string `json:"carrier"`
	Tracking   string `json:"tracking"`
}

// ProductTrending: a product reached a number of confirmed orders. The
// analytics service, written in JavaScript (examples/shop/analytics),
// publishes it; nothing in Go does.
type ProductTrending struct {
	ProductID string `json:"product_id"`
	Orders    int    `json:"orders"`    // confirmed orders that contain the product
	Threshold int    `json:"threshold"` // the count that makes a product trending
}

// The contracts, keyed by order so each order's events arrive in order.
var (
	OrderConfirmedV1 = herald.Integration[OrderConfirmed]("shop.order.confirmed", herald.Version(1),
		herald.KeyBy(func(e OrderConfirmed) string { return e.OrderID }))
	ShipmentScheduledV1 = herald.Integration[ShipmentScheduled]("shop.shipment.scheduled", herald.Version(1),
		herald.KeyBy(func(e ShipmentScheduled) string { return e.OrderID }))
	ShipmentDispatchedV1 = herald.Integration[ShipmentDispatched]("shop.shipment.dispatched", herald.Version(1),
		herald.KeyBy(func(e ShipmentDispatched) string { return e.OrderID }))
	// ProductTrendingV1 is keyed by product: a product's events stay in order.
	ProductTrendingV1 = herald.Integration[ProductTrending]("shop.product.trending", herald.Version(1),
		herald.KeyBy(func(e ProductTrending) string { return e.ProductID }))
)
