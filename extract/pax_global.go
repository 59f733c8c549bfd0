package extract

import (
	"archive/tar"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PAX global headers (typeflag 'g', the first header of every `git
// archive`) set defaults for all the entries after them, as in GNU tar: a
// record in an entry's own extended header wins, a later global header
// replaces an earlier one's records. Go's tar reader returns them as
// entries and applies nothing, so it is done here, in the rules Extract
// and Validate share.

// globalApplied are the records applied to later entries. Others that
// only describe the archive (comment: git's commit id; charsets; ctime,
// which no file can be given) are dropped silently; records that would
// rename, resize or relink every entry are ignored with a warning.
var globalApplied = map[string]bool{"uid": true, "gid": true, "uname": true, "gname": true, "mtime": true, "atime": true}

var globalSilent = map[string]bool{"comment": true, "charset": true, "hdrcharset": true, "ctime": true}

// The global records in force are kept to the end and copied into every
// later entry, so they are bounded: a git archive sets one (its comment,
// which is dropped), and without a bound a run of global headers of
// distinct SCHILY.xattr.* records would pile up in memory and be set on
// every file after them.
const (
	maxGlobalRecords = 64
	maxGlobalBytes   = 64 << 10 // keys and values
)

func (x *extraction) setGlobal(hdr *tar.Header) error {
	var ignored []string
	for k, v := range hdr.PAXRecords {
		switch {
		case globalApplied[k] || strings.HasPrefix(k, "SCHILY.xattr."):
			if x.global == nil {
				x.global = map[string]string{}
			}
			if v == "" {
				delete(x.global, k) // an empty value unsets it
			} else {
				x.global[k] = v
			}
		case !globalSilent[k]:
			ignored = append(ignored, k)
		}
	}
	if len(ignored) > 0 {
		sort.Strings(ignored)
		x.opts.warn("ignoring PAX global records %s in %s", strings.Join(ignored, ", "), printable(hdr.Name))
	}
	size := 0
	for k, v := range x.global {
		size += len(k) + len(v)
	}
	if len(x.global) > maxGlobalRecords || size > maxGlobalBytes {
		return entryErr(ErrOutOfRange, hdr.Name, " (PAX global records in force: %d of %d bytes, allowed %d records of %d bytes)",
			len(x.global), size, maxGlobalRecords, maxGlobalBytes)
	}
	return nil
}

// applyGlobal gives hdr the global records it does not set itself.
func (x *extraction) applyGlobal(hdr *tar.Header) error {
	for k, v := range x.global {
		if _, own := hdr.PAXRecords[k]; own {
			continue
		}
		var err error
		switch k {
		case "uid":
			hdr.Uid, err = parseGlobalID(v)
		case "gid":
			hdr.Gid, err = parseGlobalID(v)
		case "uname":
			hdr.Uname = v
		case "gname":
			hdr.Gname = v
		case "mtime":
			hdr.ModTime, err = parsePAXTime(v)
		case "atime":
			hdr.AccessTime, err = parsePAXTime(v)
		default: // SCHILY.xattr.*
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[k] = v
		}
		if err != nil {
			return entryErr(ErrCorrupt, hdr.Name, " (PAX global record %s=%q: %v)", k, v, err)
		}
	}
	return nil
}

func parseGlobalID(v string) (int, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	return int(n), err
}

// parsePAXTime parses "seconds[.fraction]" as archive/tar does (which
// does not export it); digits past nanoseconds are dropped.
func parsePAXTime(s string) (time.Time, error) {
	ss, sn, _ := strings.Cut(s, ".")
	secs, err := strconv.ParseInt(ss, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	if len(sn) == 0 {
		return time.Unix(secs, 0), nil
	}
	if strings.Trim(sn, "0123456789") != "" {
		return time.Time{}, strconv.ErrSyntax
	}
	if len(sn) < 9 {
		sn += strings.Repeat("0", 9-len(sn))
	}
	nsecs, _ := strconv.ParseInt(sn[:9], 10, 64)
	if strings.HasPrefix(ss, "-") {
		return time.Unix(secs, -nsecs), nil
	}
	return time.Unix(secs, nsecs), nil
}
