package kmsg

import (
	"os"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Record
		ok   bool
	}{
		{"3,1234,5678,-;Buffer I/O error on dev dm-7, logical block 16384, lost async page write\n", Record{1234, 0, "Buffer I/O error on dev dm-7, logical block 16384, lost async page write"}, true},
		{"6,5,10,c;EXT4-fs (dm-3): mounted\n SUBSYSTEM=block\n DEVICE=b253:3\n", Record{5, 0, "EXT4-fs (dm-3): mounted"}, true},
		{"4,7,1;no flags field\n", Record{7, 0, "no flags field"}, true},
		{"14,8,1,-;written by a process (user facility)\n", Record{8, 1, "written by a process (user facility)"}, true},
		{"no header at all\n", Record{}, false},
		{"6,x,1,-;bad sequence\n", Record{}, false},
		{"6;short header\n", Record{}, false},
	} {
		got, ok := Parse([]byte(c.in))
		if ok != c.ok || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestReadAvailableFromAFile(t *testing.T) {
	path := t.TempDir() + "/kmsg"
	data := "6,1,10,-;first\n SUBSYSTEM=block\n3,2,20,-;second\n4,3,30,-;third\n"
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []Record
	n, lost, err := r.ReadAvailable(2, func(rec Record) { got = append(got, rec) })
	if err != nil || lost || n < 2 {
		t.Fatalf("ReadAvailable = %d, %v, %v", n, lost, err)
	}
	want := []Record{{1, 0, "first"}, {2, 0, "second"}, {3, 0, "third"}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("records %+v, want %+v", got, want)
	}
}
