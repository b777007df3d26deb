package envelope_test

import (
	"fmt"
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
