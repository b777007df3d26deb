// Package adminhook lets the packages of this module that are built on
// herald (the notifier) add admin endpoints to a service — its delivery
// log, say — without herald exporting a method for it.
//
// Package herald sets Add once, in its init, before any service exists;
// nothing changes it afterwards. Its svc is a *herald.Service, which this
// package cannot name: herald imports it.
package adminhook

import "github.com/heraldhq/herald/broker"

// Add adds endpoint e to the admin endpoints service svc serves once
// started; an endpoint of the same name replaces the earlier one.
var Add func(svc any, e broker.AdminEndpoint)
