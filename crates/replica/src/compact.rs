//! The records of an answer frame on the wire, without what the receiver can restore.
//!
//! A frame's records mostly share their database, collection, author and group signature
//! (a batch of 5,000 rows is one author's, in one collection, under one signature), and a
//! record's version is the hash of its content. So the responder leaves out the version of
//! every record, and each of those four fields where it equals the previous record's in the
//! frame; the initiator restores them before it checks anything. That takes about half the
//! bytes of a typical record off the wire (65 of signature, 32 of version, 20 of author).
//!
//! An empty field is never valid in a record (names are never empty, every record is
//! signed, and the author and version are 20 and 32 bytes), so "left out" cannot be
//! confused with a value. A record that carries a field keeps it: a record sent whole (as
//! older senders did) is taken as it is, and its version is still checked against its
//! content. Restoring is bounded: a frame holds at most
//! [`tributary_wire::MAX_REPLICA_FRAME_RECORDS`] records, each of which grows by at most
//! the four fields' bounds and a version.

use tributary_wire::replica::LogRecord;

use crate::record::wire_version;
use crate::types::MAX_NAME_LEN;

/// The most bytes of each field a record may inherit: longer values are invalid anyway
/// (names are at most 64 bytes, an author 20, a signature 65), and a frame that sent one
/// must not make every record after it a copy of it.
const MAX_INHERITED: [usize; 4] = [MAX_NAME_LEN, MAX_NAME_LEN, 20, 65];

/// The sender's side: the fields of the record sent before, to leave out what repeats.
#[derive(Default)]
pub(crate) struct Compactor {
    last: Shared,
}

/// The receiver's side: the fields of the record restored before.
#[derive(Default)]
struct Restorer {
    last: Shared,
}

/// The fields a record may leave to the one before it.
#[derive(Default)]
struct Shared {
    db: String,
    collection: String,
    author: Vec<u8>,
    signature: Vec<u8>,
}

impl Compactor {
    /// Leaves out of `record` its version and what it shares with the record before.
    pub(crate) fn compact(&mut self, record: &mut LogRecord) {
        record.version.clear();
        leave_out(&mut self.last.db, &mut record.db);
        leave_out(&mut self.last.collection, &mut record.collection);
        leave_out(&mut self.last.author, &mut record.author);
        leave_out(&mut self.last.signature, &mut record.signature);
    }
}

impl Restorer {
    fn restore(&mut self, record: &mut LogRecord) {
        let [db, collection, author, signature] = MAX_INHERITED;
        restore(&mut self.last.db, &mut record.db, db);
        restore(
            &mut self.last.collection,
            &mut record.collection,
            collection,
        );
        restore(&mut self.last.author, &mut record.author, author);
        restore(&mut self.last.signature, &mut record.signature, signature);
        if record.version.is_empty() {
            record.version = wire_version(record).0.to_vec();
        }
    }
}

fn leave_out<T: PartialEq + Default + Clone>(last: &mut T, field: &mut T) {
    if field == last {
        *field = T::default();
    } else {
        last.clone_from(field);
    }
}

fn restore<T: PartialEq + Default + Clone + AsRef<[u8]>>(last: &mut T, field: &mut T, max: usize) {
    if *field == T::default() {
        field.clone_from(last);
    } else if field.as_ref().len() <= max {
        last.clone_from(field);
    } else {
        // Not handed on: the records after it that leave the field out stay invalid.
        *last = T::default();
    }
}

/// A frame's records as they were before the responder left fields out; records sent whole
/// come back unchanged. Nothing is checked here: the engine checks the records restored.
#[must_use]
pub fn restore_all(records: &[LogRecord]) -> Vec<LogRecord> {
    let mut restorer = Restorer::default();
    records
        .iter()
        .map(|r| {
            let mut record = r.clone();
            restorer.restore(&mut record);
            record
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn record(db: &str, collection: &str, author: u8, signature: u8, n: u64) -> LogRecord {
        let mut r = LogRecord {
            db: db.into(),
            collection: collection.into(),
            key: format!("k{n}"),
            parents: if n.is_multiple_of(3) {
                vec![vec![1; 32]]
            } else {
                Vec::new()
            },
            time: 1000 + n,
            batch_id: 7,
            batch_count: 3,
            value: vec![n as u8; 100],
            author: vec![author; 20],
            generation: n + 1,
            signature: vec![signature; 65],
            ..LogRecord::default()
        };
        r.version = wire_version(&r).0.to_vec();
        r
    }

    #[test]
    fn records_come_back_as_they_were_sent() {
        let sent = vec![
            record("db", "notes", 1, 1, 0),
            record("db", "notes", 1, 1, 1),
            record("db", "tasks", 1, 1, 2),
            record("db", "tasks", 2, 2, 3),
            record("db", "tasks", 2, 2, 4),
            record("db", "notes", 1, 3, 5),
        ];
        let mut compactor = Compactor::default();
        let wire: Vec<LogRecord> = sent
            .iter()
            .map(|r| {
                let mut r = r.clone();
                compactor.compact(&mut r);
                r
            })
            .collect();
        assert_eq!(restore_all(&wire), sent);
        let (whole, compact): (usize, usize) = (
            sent.iter().map(Message::encoded_len).sum(),
            wire.iter().map(Message::encoded_len).sum(),
        );
        assert!(wire[1].db.is_empty() && wire[1].signature.is_empty());
        assert!(compact * 10 < whole * 7, "{compact} of {whole} bytes");
        // Records sent whole, compact ones among them, come back the same.
        let mut mixed = wire;
        mixed[3] = sent[3].clone();
        assert_eq!(restore_all(&mixed), sent);
    }

    /// A first record that leaves a field out has nothing to take it from: it stays empty,
    /// and the record's checks refuse it.
    #[test]
    fn a_first_record_with_a_field_left_out_stays_invalid() {
        let mut first = record("db", "notes", 1, 1, 0);
        first.author.clear();
        first.signature.clear();
        let restored = restore_all(&[first]);
        assert!(restored[0].author.is_empty() && restored[0].signature.is_empty());
        assert!(crate::record::Record::check(&restored[0]).is_err());
    }

    /// A field over its bound is not handed on: a frame of one 1 MB name and many records
    /// leaving it out restores to small, invalid records, not to copies of the name.
    #[test]
    fn an_oversized_field_is_not_inherited() {
        let mut big = record("db", "notes", 1, 1, 0);
        big.db = "d".repeat(1 << 20);
        big.signature = vec![1; 1 << 20];
        let mut next = record("db", "notes", 1, 1, 1);
        next.db.clear();
        next.signature.clear();
        let restored = restore_all(&[big, next.clone(), next]);
        for r in &restored[1..] {
            assert!(r.db.is_empty() && r.signature.is_empty());
        }
        let at_bound = record(&"d".repeat(MAX_NAME_LEN), "notes", 1, 1, 2);
        let mut after = record("x", "notes", 1, 1, 3);
        after.db.clear();
        let restored = restore_all(&[at_bound.clone(), after]);
        assert_eq!(
            restored[1].db, at_bound.db,
            "a name at its bound is inherited"
        );
    }
}
