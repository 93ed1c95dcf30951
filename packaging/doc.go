// Package packaging holds the tests of fnbuilder's deployment artefacts:
// the Helm chart in charts/buildkit (linted and rendered with a real helm,
// every object decoded strictly with client-go's scheme), stack.yaml (parsed
// with go-sdk's stack package, as faas-cli does) and the fnbuilder-go
// template in template/ (laid out as faas-cli 0.18 does, then built).
// They run offline; helm comes from hack/install-helm.sh.
package packaging
