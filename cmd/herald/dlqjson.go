package main

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/heraldhq/herald"
)

// writeDeadLettersJSON writes each dead letter as a line of JSON, with the
// fields of herald dlq show.
func writeDeadLettersJSON(w io.Writer, dls []herald.DeadLetter) error {
	var buf, line bytes.Buffer
	for _, d := range dls {
		buf.Reset()
		line.Reset()
		if err := showDeadLetter(&buf, d); err != nil {
			return err
		}
		if err := json.Compact(&line, buf.Bytes()); err != nil {
			return err
		}
		line.WriteByte('\n')
		if _, err := w.Write(line.Bytes()); err != nil {
			return err
		}
	}
	return nil
}
