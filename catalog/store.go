package catalog

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/heraldhq/herald/broker"
)

// Load reads every manifest from st with its live instances; a service
// without one is marked Stale.
func Load(ctx context.Context, st broker.ManifestStore) ([]Manifest, error) {
	raw, err := st.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	insts, err := st.Instances(ctx)
	if err != nil {
		return nil, err
	}
	var out []Manifest
	for _, key := range sortedKeys(raw) {
		var m Manifest
		if err := json.Unmarshal(raw[key], &m); err != nil {
			return nil, fmt.Errorf("%w: stored manifest %q: %v", ErrInvalidManifest, key, err)
		}
		if err := m.Validate(); err != nil {
			return nil, err
		}
		m.Instances = nil
		for _, r := range insts {
			if r.Service != key {
				continue
			}
			var in Instance
			if err := json.Unmarshal(r.Info, &in); err != nil || in.ID == "" {
				in = Instance{ID: r.Instance}
			}
			in.LastSeen = r.Updated
			m.Instances = append(m.Instances, in)
		}
		slices.SortFunc(m.Instances, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
		m.Stale = len(m.Instances) == 0
		out = append(out, m)
	}
	return out, nil
}
