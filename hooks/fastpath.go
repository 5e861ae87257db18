package hooks

import (
	"github.com/dpsbroker/dpsbroker/provisioning"
	"github.com/dpsbroker/dpsbroker/provisioning/wire"
)

// registered answers a register request whose operation the service has
// created. Without Options.FastPath the device always gets 202
// "assigning" with retry-after and polls, as Azure does; with it, an
// operation that is already final (every allocation is synchronous today;
// a custom webhook would not be) is answered at once with the 200 a poll
// would get, operationId included (embedded C and Java need it). The
// operation is stored either way, so an SDK that polls anyway gets the
// same 200.
func (h *DPS) registered(s *session, op *provisioning.Operation) response {
	if h.opts.FastPath && wire.Status(op.Status).Final() {
		return h.operationResponse(s, op)
	}
	return h.jsonResponse(202, h.retryAfter, &wire.RegistrationOperationStatus{
		OperationID: op.OperationID,
		Status:      wire.StatusAssigning,
	})
}
