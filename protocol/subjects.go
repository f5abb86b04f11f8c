package protocol

// ServiceName is the name of the NATS micro service (nats micro ls).
const ServiceName = "edged"

// Endpoint names of the NATS service. An endpoint is reachable on
// "edged.<node>.<name>" (one daemon) and on "edged.<name>" in the queue
// group QueueGroup (any daemon of the fleet).
const (
	EndpointGenerate = "generate" // body: CompletionRequest
	EndpointChat     = "chat"     // body: ChatRequest
	EndpointTokenize = "tokenize" // body: TokenizeRequest
	EndpointModels   = "models"   // no body; reply: ModelList
	EndpointStatus   = "status"   // no body; reply: Status
)

// QueueGroup is the queue group of the un-addressed subjects.
const QueueGroup = "edged"

// Subject returns the subject of endpoint on node, or the un-addressed
// subject when node is empty.
func Subject(node, endpoint string) string {
	if node == "" {
		return ServiceName + "." + endpoint
	}
	return ServiceName + "." + node + "." + endpoint
}

// MetricsSubject and EventsSubject are where a node publishes its metrics
// and lifecycle events.
func MetricsSubject(node string) string { return ServiceName + "." + node + ".metrics" }

// EventsSubject is where node publishes lifecycle events.
func EventsSubject(node string) string { return ServiceName + "." + node + ".events" }
