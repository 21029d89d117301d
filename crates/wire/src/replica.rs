//! The replica messages (`proto/replica.proto`): signed log records, generation vectors and
//! the GetDeltas exchange. Only the syntax is checked here; `tributary_replica` verifies
//! signatures, versions, authors and ACLs.

use prost::Message;

/// One write of one row, signed by its author.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct LogRecord {
    /// The database.
    #[prost(string, tag = "1")]
    pub db: String,
    /// The collection.
    #[prost(string, tag = "2")]
    pub collection: String,
    /// The row key.
    #[prost(string, tag = "3")]
    pub key: String,
    /// The version this record creates (32 bytes).
    #[prost(bytes = "vec", tag = "4")]
    pub version: Vec<u8>,
    /// The versions it follows (at most two).
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub parents: Vec<Vec<u8>>,
    /// Hybrid logical clock time.
    #[prost(uint64, tag = "6")]
    pub time: u64,
    /// Whether the write deletes the row.
    #[prost(bool, tag = "7")]
    pub deleted: bool,
    /// The batch (0: none).
    #[prost(uint64, tag = "8")]
    pub batch_id: u64,
    /// Records of the batch in this collection.
    #[prost(uint32, tag = "9")]
    pub batch_count: u32,
    /// The value (empty for a delete).
    #[prost(bytes = "vec", tag = "10")]
    pub value: Vec<u8>,
    /// The author's node id (20 bytes).
    #[prost(bytes = "vec", tag = "11")]
    pub author: Vec<u8>,
    /// The author's generation.
    #[prost(uint64, tag = "12")]
    pub generation: u64,
    /// Recoverable signature (65 bytes) of the record's group (its batch in its collection).
    #[prost(bytes = "vec", tag = "13")]
    pub signature: Vec<u8>,
}

/// One entry of a generation vector.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct GenEntry {
    /// The device (20 bytes).
    #[prost(bytes = "vec", tag = "1")]
    pub device: Vec<u8>,
    /// Its highest generation held.
    #[prost(uint64, tag = "2")]
    pub generation: u64,
}

/// The generation vector of one syncgroup.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Knowledge {
    /// The syncgroup's name.
    #[prost(string, tag = "1")]
    pub syncgroup: String,
    /// The vector.
    #[prost(message, repeated, tag = "2")]
    pub gens: Vec<GenEntry>,
}

/// The initiator's request: its knowledge of each syncgroup it shares.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct DeltaRequest {
    /// The database.
    #[prost(string, tag = "1")]
    pub db: String,
    /// The initiator's node id.
    #[prost(bytes = "vec", tag = "2")]
    pub initiator: Vec<u8>,
    /// Its knowledge per syncgroup.
    #[prost(message, repeated, tag = "3")]
    pub knowledge: Vec<Knowledge>,
}

/// A syncgroup's spec.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SyncgroupSpec {
    /// Its name, unique in the database.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Free text.
    #[prost(string, tag = "2")]
    pub description: String,
    /// The collections it shares.
    #[prost(string, repeated, tag = "3")]
    pub collections: Vec<String>,
    /// Node ids that may read.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub readers: Vec<Vec<u8>>,
    /// Node ids that may write (and read).
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub writers: Vec<Vec<u8>>,
    /// Node ids that may change the spec and members (and read and write).
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub admins: Vec<Vec<u8>>,
    /// The spec's version (compare-and-swap on updates).
    #[prost(uint64, tag = "7")]
    pub version: u64,
    /// Who signed this version.
    #[prost(bytes = "vec", tag = "8")]
    pub signer: Vec<u8>,
    /// Recoverable signature (65 bytes).
    #[prost(bytes = "vec", tag = "9")]
    pub signature: Vec<u8>,
}

/// A member's state in a syncgroup.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Member {
    /// The member's node id.
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    /// 1 joined, 2 left, 3 ejected.
    #[prost(uint32, tag = "2")]
    pub state: u32,
    /// Hybrid logical clock time of the change.
    #[prost(uint64, tag = "3")]
    pub time: u64,
    /// Who signed it.
    #[prost(bytes = "vec", tag = "4")]
    pub signer: Vec<u8>,
    /// Recoverable signature (65 bytes).
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// A syncgroup's spec and members.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct SyncgroupState {
    /// The database.
    #[prost(string, tag = "1")]
    pub db: String,
    /// The spec.
    #[prost(message, optional, tag = "2")]
    pub spec: Option<SyncgroupSpec>,
    /// The members.
    #[prost(message, repeated, tag = "3")]
    pub members: Vec<Member>,
    /// The specs before `spec`, oldest first, each signed by an admin of the one before it
    /// (the replica engine keeps the last 16, within 32 KiB): a member that missed versions
    /// follows them.
    #[prost(message, repeated, tag = "4")]
    pub history: Vec<SyncgroupSpec>,
}

/// One frame of a GetDeltas answer.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct DeltaFrame {
    /// The responder's syncgroups (first frame only).
    #[prost(message, repeated, tag = "1")]
    pub syncgroups: Vec<SyncgroupState>,
    /// Records, parents before children, at most [`crate::MAX_REPLICA_FRAME_RECORDS`]. Each
    /// leaves out its version, and `db`, `collection`, `author` and `signature` where they
    /// equal the previous record's in the frame (the replica engine restores them).
    #[prost(message, repeated, tag = "2")]
    pub records: Vec<LogRecord>,
    /// The knowledge the frames up to this one complete.
    #[prost(message, repeated, tag = "3")]
    pub knowledge: Vec<Knowledge>,
    /// Whether this is the answer's last frame.
    #[prost(bool, tag = "4")]
    pub last: bool,
}

/// A request on `/tributary/replica/1`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct ReplicaRequest {
    /// The request.
    #[prost(oneof = "replica_request::Message", tags = "1, 2, 3")]
    pub message: Option<replica_request::Message>,
}

/// The oneof of [`ReplicaRequest`].
pub mod replica_request {
    /// Which request a [`super::ReplicaRequest`] carries.
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum Message {
        /// GetDeltas.
        #[prost(message, tag = "1")]
        Delta(super::DeltaRequest),
        /// Join a syncgroup at its admin.
        #[prost(message, tag = "2")]
        Join(super::JoinRequest),
        /// The sender has new writes in a database.
        #[prost(message, tag = "3")]
        News(super::News),
    }
}

/// A join at an admin.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct JoinRequest {
    /// The database.
    #[prost(string, tag = "1")]
    pub db: String,
    /// The syncgroup.
    #[prost(string, tag = "2")]
    pub syncgroup: String,
}

/// "I have news": the sender wrote to `db`.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct News {
    /// The database.
    #[prost(string, tag = "1")]
    pub db: String,
}

/// Frames of a GetDeltas answer, up to a byte budget.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct DeltaFrames {
    /// The frames, in order.
    #[prost(message, repeated, tag = "1")]
    pub frames: Vec<DeltaFrame>,
    /// Whether the answer was cut at a frame boundary: ask again.
    #[prost(bool, tag = "2")]
    pub more: bool,
}

/// An admin's grant to a joiner.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Grant {
    /// The syncgroup, the joiner signed in.
    #[prost(message, optional, tag = "1")]
    pub state: Option<SyncgroupState>,
    /// The admin's knowledge at the join.
    #[prost(message, optional, tag = "2")]
    pub checkpoint: Option<Knowledge>,
}

/// A request refused, and why.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Refusal {
    /// Why.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// An acknowledgement.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Ack {}

/// The answer to a [`ReplicaRequest`].
#[derive(Clone, PartialEq, Eq, Message)]
pub struct ReplicaReply {
    /// The answer.
    #[prost(oneof = "replica_reply::Message", tags = "1, 2, 3, 4")]
    pub message: Option<replica_reply::Message>,
}

/// The oneof of [`ReplicaReply`].
pub mod replica_reply {
    /// Which answer a [`super::ReplicaReply`] carries.
    #[derive(Clone, PartialEq, Eq, prost::Oneof)]
    pub enum Message {
        /// GetDeltas frames.
        #[prost(message, tag = "1")]
        Frames(super::DeltaFrames),
        /// A join granted.
        #[prost(message, tag = "2")]
        Grant(Box<super::Grant>),
        /// News taken.
        #[prost(message, tag = "3")]
        Ack(super::Ack),
        /// Refused.
        #[prost(message, tag = "4")]
        Refused(super::Refusal),
    }
}
