package redisstore

import (
	"testing"

	"github.com/google/uuid"
)

func TestStoredIDs(t *testing.T) {
	for _, id := range []string{
		uuid.NewString(), "8a1c6a0e-3f7b-4f0e-b1b7-6a2d9f1c0e42",
		"8A1C6A0E-3F7B-4F0E-B1B7-6A2D9F1C0E42", // upper case: kept as given
		"{8a1c6a0e-3f7b-4f0e-b1b7-6a2d9f1c0e42}", "urn:uuid:8a1c6a0e-3f7b-4f0e-b1b7-6a2d9f1c0e42",
		"alice@example.com", "", "x", "12345678901234567",
	} {
		s := storedID(id)
		if got := loadedID(s); got != id {
			t.Errorf("%q stored as %q loads as %q", id, s, got)
		}
		if canonical := uuid.Must(uuid.NewRandom()).String(); len(storedID(canonical)) != 17 {
			t.Errorf("canonical UUID not compacted")
		}
	}
}

func FuzzStoredIDs(f *testing.F) {
	f.Add("8a1c6a0e-3f7b-4f0e-b1b7-6a2d9f1c0e42")
	f.Add("alice")
	f.Fuzz(func(t *testing.T, id string) {
		if checkText("id", id, 256) != nil {
			return // refused before it is stored
		}
		if got := loadedID(storedID(id)); got != id {
			t.Fatalf("%q loads back as %q", id, got)
		}
	})
}
