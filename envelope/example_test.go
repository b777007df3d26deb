package envelope_test

import (
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/heraldhq/herald/envelope"
)

func Example() {
	type orderConfirmed struct {
		OrderID string `json:"order_id"`
	}
	data, err := envelope.JSON.Marshal(orderConfirmed{OrderID: "A-1"})
	if err != nil {
		panic(err)
	}
	e := &envelope.Envelope{
		ID:              "01HXZ3N0P0ABCDEFGHJKMNPQRS", // normally envelope.NewID(time.Now())
		Type:            "shop.order.confirmed",
		Version:         1,
		Kind:            envelope.KindIntegration,
		Source:          "orders",
		Key:             "customer-42",
		Time:            time.Date(2024, 5, 17, 9, 30, 15, 123456789, time.UTC),
		CorrelationID:   "01HXZ3MZZZ0000000000000000",
		DataContentType: envelope.JSON.ContentType(),
		Data:            data,
	}

	// Producer side: attributes become headers, Data the body.
	header, body := envelope.ToBinary(e)
	keys := make([]string, 0, len(header))
	for k := range header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%s: %s\n", k, header[k])
	}
	fmt.Printf("body: %s\n", body)

	// Consumer side: header keys may arrive in any case.
	header["Ce-Type"] = header[envelope.HeaderType]
	delete(header, envelope.HeaderType)
	got, err := envelope.FromBinary(header, body)
	if err != nil {
		panic(err)
	}
	var payload orderConfirmed
	if err := envelope.JSON.Unmarshal(got.Data, &payload); err != nil {
		panic(err)
	}
	fmt.Println(got.Type, got.Version, got.Kind, got.Time.Format(time.RFC3339Nano), payload.OrderID)

	// Output:
	// ce-correlationid: 01HXZ3MZZZ0000000000000000
	// ce-datacontenttype: application/json
	// ce-heraldkind: integration
	// ce-heraldversion: 1
	// ce-id: 01HXZ3N0P0ABCDEFGHJKMNPQRS
	// ce-partitionkey: customer-42
	// ce-source: orders
	// ce-specversion: 1.0
	// ce-time: 2024-05-17T09:30:15.123456789Z
	// ce-type: shop.order.confirmed
	// body: {"order_id":"A-1"}
	// shop.order.confirmed 1 integration 2024-05-17T09:30:15.123456789Z A-1
}

func ExampleNewID() {
	t := time.Date(2024, 5, 17, 9, 30, 15, 0, time.UTC)
	a, b := envelope.NewID(t), envelope.NewID(t)
	fmt.Println(len(a), a < b)
	// Output: 26 true
}

// Decode reads an event as a CloudEvents SDK in another language sends it:
// no herald extensions, so the kind is the subscription's and the version
// the one dataschema names; the foreign producer's data is then checked
// against the contract's schema by the consumer.
func ExampleDecode() {
	header := map[string]string{
		"ce-specversion":     "1.0",
		"ce-id":              "a7c1e2",
		"ce-source":          "/analytics",
		"ce-type":            "shop.product.trending",
		"ce-time":            "2024-05-17T09:30:15Z",
		"ce-dataschema":      "https://example.com/schemas/shop.product.trending/v2",
		"ce-partitionkey":    "lamp%20%E2%9C%93", // percent-encoded, as the NATS binding says
		"ce-datacontenttype": "application/json",
	}
	e, read, err := envelope.Decode(maps.All(header), []byte(`{"product":"lamp","count":3}`), envelope.KindIntegration)
	if err != nil {
		panic(err)
	}
	fmt.Println(e.Type, e.Version, e.Kind, e.Key, "foreign:", read.Foreign)
	// Output: shop.product.trending 2 integration lamp ✓ foreign: true
}
