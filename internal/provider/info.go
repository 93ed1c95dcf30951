package provider

import (
	"net/http"

	"github.com/openfaas/faas-provider/types"
)

// ProviderName is what /system/info calls this provider.
const ProviderName = "fnb-provider"

// MakeInfoHandler answers GET /system/info.
func MakeInfoHandler(version, sha string) http.HandlerFunc {
	info := types.ProviderInfo{
		Name:          ProviderName,
		Orchestration: "containerd",
		Version:       &types.VersionInfo{Release: version, SHA: sha},
	}
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, info)
	}
}
