package protocol

import "strings"

// ServiceName is the name of the NATS micro service (nats micro ls).
const ServiceName = "edged"

// Endpoint names of the NATS service. An endpoint is reachable on
// "edged.<node>.<name>" (one daemon) and, except for the edit, adapter and
// job endpoints, on "edged.<name>" in the queue group QueueGroup (any
// daemon of the fleet): the edits, adapter versions and jobs are each
// node's own, and "edged.edits.…" belongs to the edit stream.
const (
	EndpointGenerate   = "generate"     // body: CompletionRequest
	EndpointChat       = "chat"         // body: ChatRequest
	EndpointTokenize   = "tokenize"     // body: TokenizeRequest
	EndpointModels     = "models"       // no body; reply: ModelList
	EndpointStatus     = "status"       // no body; reply: Status
	EndpointEdits      = "edits"        // body: EditListRequest or none; reply: EditList
	EndpointEditStatus = "edits.status" // body: EditStatusRequest; reply: EditRecord
	// body: AdapterListRequest or none; reply: AdapterList
	EndpointAdapters = "adapters"
	// body: AdapterRollbackRequest; reply: AdapterRollbackResponse
	EndpointAdapterRollback = "adapters.rollback"
	EndpointJobs            = "jobs"        // body: JobListRequest or none; reply: JobList
	EndpointJobStatus       = "jobs.status" // body: JobRequest; reply: Job
	EndpointJobSubmit       = "jobs.submit" // body: JobSubmitRequest (examples inline); reply: Job
	EndpointJobPause        = "jobs.pause"  // body: JobRequest; reply: Job
	EndpointJobResume       = "jobs.resume" // body: JobRequest; reply: Job
	EndpointJobCancel       = "jobs.cancel" // body: JobRequest; reply: Job
	// body: AdapterPublishRequest; reply: AdapterPublishResponse
	EndpointAdapterPublish = "adapters.publish"
	// body: AdapterPullRequest; reply: AdapterPullResponse
	EndpointAdapterPull = "adapters.pull"
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

// SubjectToken makes s usable as one subject token: '.', '*', '>',
// spaces and control characters become '_', and "" becomes "edged". The
// mapping keeps names readable for people who type subjects (a model
// "qwen2.5-0.5b" is addressed as "qwen2_5-0_5b"); it is not one to one,
// so whoever receives a message on such a subject checks the name in the
// body as well.
func SubjectToken(s string) string {
	if s == "" {
		return ServiceName
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '.', r == '*', r == '>', r <= ' ', r == 0x7f:
			return '_'
		}
		return r
	}, s)
}

// The edit stream: a JetStream stream named EditsStream that captures
// EditsSubjects. An Edit is published on EditsAllSubject (every node),
// EditsNodeSubject (one node) or EditsModelSubject (the nodes serving a
// model); a Retraction on EditsRetractSubject. Publishers set the
// Nats-Msg-Id header so that the stream drops a message published twice.
const (
	EditsStream         = "EDGED_EDITS"
	EditsSubjects       = editsPrefix + ">"
	EditsAllSubject     = editsPrefix + "all"
	EditsRetractSubject = editsPrefix + "retract"

	editsToken  = "edits"
	editsPrefix = ServiceName + "." + editsToken + "."
)

// EditsNodeSubject is where edits for node alone are published.
func EditsNodeSubject(node string) string { return editsPrefix + "node." + SubjectToken(node) }

// EditsModelSubject is where edits for every node serving model are
// published.
func EditsModelSubject(model string) string { return editsPrefix + "model." + SubjectToken(model) }

// EditsConsumer is the name of node's durable consumer of the edit
// stream. Consumer names cannot hold path separators either.
func EditsConsumer(node string) string {
	return ServiceName + "-" + strings.NewReplacer("/", "_", `\`, "_").Replace(SubjectToken(node))
}

// NodeReserved reports whether node cannot be a node name: the subjects
// edged.<node>.… of a node named "edits" would fall inside the edit
// stream's EditsSubjects.
func NodeReserved(node string) bool { return SubjectToken(node) == editsToken }
