package wire

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// docRoles renders a role set as docs/PROTOCOL.md writes it.
func docRoles(s RoleSet) string {
	if s == AllRoles {
		return "any"
	}
	var names []string
	for r := Role(1); r <= maxRole; r++ {
		if s.Has(r) {
			names = append(names, r.String())
		}
	}
	return strings.Join(names, ", ")
}

// TestProtocolDoc keeps the message table of docs/PROTOCOL.md equal to
// the registry: every type with its number, name, version, phase,
// senders and receivers, and its struct's fields in order.
func TestProtocolDoc(t *testing.T) {
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "\n## Message table\n")
	if !ok {
		t.Fatal(`docs/PROTOCOL.md has no "## Message table" section`)
	}
	table, _, _ = strings.Cut(table, "\n## ")
	rows := map[Type][]string{}
	for line := range strings.Lines(table) {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 7 {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		n, err := strconv.Atoi(cells[0])
		if err != nil {
			continue // the header and separator rows
		}
		if _, dup := rows[Type(n)]; dup {
			t.Errorf("type %d listed twice", n)
		}
		rows[Type(n)] = cells
	}
	for _, mi := range Messages() {
		cells, ok := rows[mi.Type]
		if !ok {
			t.Errorf("%s (%d) is registered but not in docs/PROTOCOL.md", mi.Name, mi.Type)
			continue
		}
		delete(rows, mi.Type)
		phase := "session"
		if mi.Handshake {
			phase = "handshake"
		}
		want := []string{strconv.Itoa(int(mi.Type)), mi.Name, strconv.Itoa(int(mi.Since)), phase, docRoles(mi.From), docRoles(mi.To)}
		if !reflect.DeepEqual(cells[:6], want) {
			t.Errorf("docs/PROTOCOL.md row %q\nregistry says    %q", cells[:6], want)
		}
		// The fields column names the struct's fields in order.
		st := reflect.TypeOf(mi.New()).Elem()
		rest := cells[6]
		for i := range st.NumField() {
			name := st.Field(i).Name
			j := strings.Index(rest, name+" ")
			if j < 0 {
				t.Errorf("%s: field %s missing from the doc, or out of order: %q", mi.Name, name, cells[6])
				break
			}
			rest = rest[j+len(name):]
		}
	}
	for ty := range rows {
		t.Errorf("docs/PROTOCOL.md lists type %d, which is not registered", ty)
	}
}
