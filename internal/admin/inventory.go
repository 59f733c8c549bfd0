package admin

import "net/http"

// InventoryBackend lists what the daemon holds: imported images, the
// snapshot tree, and a diagnostics bundle.
type InventoryBackend interface{}

func inventoryRoutes(mux *http.ServeMux, b InventoryBackend) {}
