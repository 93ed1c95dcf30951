package provider

import "net/http"

// MakeNamespacesHandler answers GET /system/namespaces: there is one.
func MakeNamespacesHandler() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []string{Namespace})
	}
}

// MakeNamespaceHandler answers /system/namespace/{name}: 501, namespaces
// cannot be created, changed or deleted here.
func MakeNamespaceHandler() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "namespaces cannot be managed: this provider has only "+Namespace, http.StatusNotImplemented)
	}
}
