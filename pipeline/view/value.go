package view

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// FormatValue renders a plain value (as events and state hold them: strings, json.Number or
// float64, bools, nil, []any, map[string]any) in HCL, the way Terraform prints outputs: scalars
// inline, maps and lists one element per line.
//
//	version = {
//	  "ana" = "acme/ana-lora:8d17…"
//	}
func FormatValue(v any) string {
	var b strings.Builder
	writeValue(&b, v, "")
	return b.String()
}

func writeValue(b *strings.Builder, v any, indent string) {
	switch t := v.(type) {
	case nil:
		b.WriteString("null")
	case string:
		b.WriteString(hclQuote(t))
	case bool:
		b.WriteString(strconv.FormatBool(t))
	case json.Number:
		b.WriteString(t.String())
	case float64:
		b.WriteString(strconv.FormatFloat(t, 'f', -1, 64))
	case map[string]any:
		if len(t) == 0 {
			b.WriteString("{}")
			return
		}
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("{\n")
		for _, k := range keys {
			b.WriteString(indent + "  " + hclQuote(k) + " = ")
			writeValue(b, t[k], indent+"  ")
			b.WriteString("\n")
		}
		b.WriteString(indent + "}")
	case []any:
		if len(t) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for _, e := range t {
			b.WriteString(indent + "  ")
			writeValue(b, e, indent+"  ")
			b.WriteString(",\n")
		}
		b.WriteString(indent + "]")
	default:
		fmt.Fprint(b, t)
	}
}

// hclQuote quotes a string as an HCL literal: Go's escapes, and template sequences escaped so
// the text reads back as itself.
func hclQuote(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}
