package config

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strings"

	"github.com/superfly/flyio-image-manager/internal/units"
)

var (
	sizeType    = reflect.TypeOf(units.Size(0))
	secondsType = reflect.TypeOf(units.Seconds(0))
)

// checkKinds walks a decoded TOML document (doc) beside the struct type t
// it will be decoded into and returns the first value of the wrong kind,
// named by its key ("[s3] concurrency") and the kind it wants. Sizes and
// durations given as strings are parsed here too, so their errors carry
// the key. Unknown keys are left to the strict decoder.
func checkKinds(doc map[string]any, t reflect.Type, section string) error {
	fields := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name != "" && name != "-" {
			fields[name] = f
		}
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f, ok := fields[k]
		if !ok {
			continue
		}
		v := doc[k]
		name := k
		if section != "" {
			name = "[" + section + "] " + k
		}
		if f.Type.Kind() == reflect.Struct {
			sub, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("%s must be a table ([%s]), got %s", k, k, tomlKind(v))
			}
			if err := checkKinds(sub, f.Type, k); err != nil {
				return err
			}
			continue
		}
		if err := checkValue(f.Type, v); err != nil {
			return fmt.Errorf("%s = %s: %w", name, tomlValue(v), err)
		}
	}
	return nil
}

// checkValue says why v cannot be a value of type t, in words.
func checkValue(t reflect.Type, v any) error {
	switch t {
	case sizeType:
		switch x := v.(type) {
		case int64:
			if x < 0 {
				return fmt.Errorf("want a size, e.g. 512, \"128KiB\", \"20GiB\", got a negative number")
			}
			return nil
		case string:
			_, err := units.ParseSize(x)
			return err
		}
		return fmt.Errorf("want a size, e.g. 512, \"128KiB\", \"20GiB\", got %s", tomlKind(v))
	case secondsType:
		switch x := v.(type) {
		case int64:
			if x < 0 {
				return fmt.Errorf("want a duration, got a negative number")
			}
			return nil
		case float64:
			if math.IsNaN(x) {
				// A NaN converts to a negative time.Duration on amd64.
				return fmt.Errorf("want a duration, got nan")
			}
			if x < 0 {
				return fmt.Errorf("want a duration, got a negative number")
			}
			return nil
		case string:
			_, err := units.ParseSeconds(x)
			return err
		}
		return fmt.Errorf("want a number of seconds or a duration, e.g. 300, \"90s\", \"5m\", got %s", tomlKind(v))
	}
	switch t.Kind() {
	case reflect.String:
		if _, ok := v.(string); !ok {
			return fmt.Errorf("want a string (in quotes), got %s", tomlKind(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("want true or false, got %s", tomlKind(v))
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if _, ok := v.(int64); !ok {
			return fmt.Errorf("want a whole number, got %s", tomlKind(v))
		}
	case reflect.Uint, reflect.Uint64, reflect.Uint32:
		x, ok := v.(int64)
		if !ok {
			return fmt.Errorf("want a whole number, got %s", tomlKind(v))
		}
		if x < 0 {
			return fmt.Errorf("want a whole number that is not negative")
		}
	case reflect.Float64, reflect.Float32:
		switch x := v.(type) {
		case float64:
			if math.IsNaN(x) {
				return fmt.Errorf("want a number, got nan")
			}
		case int64:
		default:
			return fmt.Errorf("want a number, got %s", tomlKind(v))
		}
	}
	return nil
}

// tomlKind names the kind of a decoded TOML value as TOML calls it.
func tomlKind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a fractional number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time"
}

// tomlValue writes v back roughly as it stood in the file.
func tomlValue(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}
