package diag

import (
	"regexp"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Redacted replaces every secret value in the bundle.
const Redacted = "<redacted>"

// secretWords are parts of a key or variable name that say its value is a
// credential. Matched against the lower-cased name.
var secretWords = []string{"secret", "password", "passwd", "token", "credential", "private", "apikey", "api_key", "access_key", "session", "auth", "cookie", "signature"}

// IsSecretName reports whether a configuration key or environment
// variable called name holds a secret: any AWS_* variable (credentials,
// profiles and config files all live there), names with a secret word in
// them, and names ending in "key" (a toml "key" under [s3] would be a key
// material, not an object key: object keys are never configured).
func IsSecretName(name string) bool {
	n := strings.ToLower(name)
	if strings.HasPrefix(n, "aws_") {
		return true
	}
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return strings.HasSuffix(n, "key")
}

// userinfo finds credentials inside URLs ("https://user:pass@host").
var userinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@`)

// RedactURLs hides the user information of every URL in s.
func RedactURLs(s string) string { return userinfo.ReplaceAllString(s, "${1}"+Redacted+"@") }

// RedactConfig renders cfg (any TOML-encodable value, e.g. config.Config)
// as TOML with the value of every secret-like key replaced and URL
// credentials hidden.
func RedactConfig(cfg any) ([]byte, error) {
	raw, err := toml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := toml.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	redactMap(m)
	return toml.Marshal(m)
}

func redactMap(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case map[string]any:
			redactMap(x)
		case string:
			if IsSecretName(k) && x != "" {
				m[k] = Redacted
			} else {
				m[k] = RedactURLs(x)
			}
		default:
			if IsSecretName(k) {
				m[k] = Redacted
			}
		}
	}
}

// RedactEnv renders environ (KEY=VALUE) one variable a line, sorted, with
// the value of every secret-like variable replaced: the name stays, so a
// reader knows AWS_SECRET_ACCESS_KEY was set.
func RedactEnv(environ []string) []byte {
	lines := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case IsSecretName(k) && v != "":
			v = Redacted
		default:
			v = RedactURLs(v)
		}
		lines = append(lines, k+"="+v)
	}
	sort.Strings(lines)
	return []byte(strings.Join(lines, "\n") + "\n")
}

// Scrubber removes known secret values from every file, whatever file
// they found their way into (a log line, an error message).
type Scrubber struct{ secrets []string }

// minSecretLen keeps short values ("1", "us") from blanking out half of
// the bundle; credentials are far longer.
const minSecretLen = 6

// NewScrubber collects the secret values of environ: those RedactEnv
// hides.
func NewScrubber(environ []string) *Scrubber {
	s := &Scrubber{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if IsSecretName(k) {
			s.Add(v)
		}
	}
	return s
}

// Add makes v a secret to scrub (ignored when too short to be one).
func (s *Scrubber) Add(v string) {
	if len(v) >= minSecretLen {
		s.secrets = append(s.secrets, v)
	}
}

// Files returns files with every secret value replaced.
func (s *Scrubber) Files(files []File) []File {
	out := make([]File, len(files))
	for i, f := range files {
		d := string(f.Data)
		for _, sec := range s.secrets {
			d = strings.ReplaceAll(d, sec, Redacted)
		}
		out[i] = File{Name: f.Name, Data: []byte(RedactURLs(d))}
	}
	return out
}
