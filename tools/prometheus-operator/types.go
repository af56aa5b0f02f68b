// Package types keeps the Prometheus Operator's API types in this module's requirements:
// controller-gen renders their CRDs from the source the module cache holds.
package types

import _ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
