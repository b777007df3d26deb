package catalog

import _ "embed"

// ManifestSchema is the JSON Schema (2020-12) of a Manifest as services
// publish it (manifest.schema.json in this package): the documented format
// any language uses to announce a service to `herald catalog`. A test keeps
// it in step with the Go types.
//
//go:embed manifest.schema.json
var ManifestSchema []byte

// ManifestSchemaID is ManifestSchema's $id. Its last element is the format
// version: readers ignore unknown properties, so the format only gains
// optional ones; a change that breaks readers gets a new version.
const ManifestSchemaID = "https://github.com/heraldhq/herald/catalog/manifest.schema.json/v1"
