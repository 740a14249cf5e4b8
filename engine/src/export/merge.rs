//! Merges sorted streams of record batches into runs of rows in (time, key) order,
//! without copying rows into new batches: encoders write each run straight from the
//! batch it lives in.
//!
//! DataFusion's own merge would build every output batch by copying all columns,
//! text included; for an export of gigabytes of text that copy is a large share of the
//! work, and the encoder has to touch every byte anyway.

use std::cmp::Ordering;
use std::ops::Range;

use deltalake::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::encode::EncodedBatch;
use crate::error::Result;

/// One sorted input: a channel of batches and the read position in its current one.
struct Input {
    rx: mpsc::Receiver<Result<RecordBatch>>,
    current: Option<EncodedBatch>,
    pos: usize,
}

/// A k-way merge over sorted inputs, read from a blocking thread.
pub(crate) struct SortedMerge {
    inputs: Vec<Input>,
    time_col: usize,
    key_col: usize,
}

impl SortedMerge {
    /// Inputs must each be sorted by (`time_col`, `key_col`) ascending; `time_col` is
    /// a microsecond timestamp column and `key_col` a string column.
    pub(crate) fn new(
        receivers: Vec<mpsc::Receiver<Result<RecordBatch>>>,
        time_col: usize,
        key_col: usize,
    ) -> Result<Self> {
        let mut merge = SortedMerge {
            inputs: receivers
                .into_iter()
                .map(|rx| Input {
                    rx,
                    current: None,
                    pos: 0,
                })
                .collect(),
            time_col,
            key_col,
        };
        for i in 0..merge.inputs.len() {
            merge.refill(i)?;
        }
        Ok(merge)
    }

    /// Loads input `i`'s next non-empty batch, or leaves it exhausted.
    fn refill(&mut self, i: usize) -> Result<()> {
        let input = &mut self.inputs[i];
        input.current = None;
        input.pos = 0;
        while let Some(batch) = input.rx.blocking_recv() {
            let batch = batch?;
            if batch.num_rows() > 0 {
                input.current = Some(EncodedBatch::new(batch)?);
                break;
            }
        }
        Ok(())
    }

    fn cmp_rows(&self, a: usize, b: usize) -> Ordering {
        let (ia, ib) = (&self.inputs[a], &self.inputs[b]);
        let (ba, bb) = (
            ia.current.as_ref().expect("live"),
            ib.current.as_ref().expect("live"),
        );
        ba.ts(self.time_col, ia.pos)
            .cmp(&bb.ts(self.time_col, ib.pos))
            .then_with(|| {
                ba.str(self.key_col, ia.pos)
                    .cmp(bb.str(self.key_col, ib.pos))
            })
            .then(a.cmp(&b))
    }

    /// Whether any row is left.
    pub(crate) fn has_more(&mut self) -> Result<bool> {
        self.refill_used_up()?;
        Ok(self.inputs.iter().any(|i| i.current.is_some()))
    }

    fn refill_used_up(&mut self) -> Result<()> {
        for i in 0..self.inputs.len() {
            let used_up =
                matches!(&self.inputs[i].current, Some(b) if self.inputs[i].pos >= b.num_rows());
            if used_up {
                self.refill(i)?;
            }
        }
        Ok(())
    }

    /// The next run: input index and a range of rows of its current batch that come
    /// next in order (at most `max` rows). `None` when every input is exhausted.
    /// The batch stays valid until the next call.
    pub(crate) fn next_run(&mut self, max: usize) -> Result<Option<(usize, Range<usize>)>> {
        // Inputs whose batch was used up by the previous run are refilled now, after
        // the caller is done with that batch.
        self.refill_used_up()?;
        let live: Vec<usize> = (0..self.inputs.len())
            .filter(|&i| self.inputs[i].current.is_some())
            .collect();
        let Some(&first) = live.first() else {
            return Ok(None);
        };
        let best =
            live.iter().copied().fold(
                first,
                |m, i| if self.cmp_rows(i, m).is_lt() { i } else { m },
            );
        let runner_up = live
            .iter()
            .copied()
            .filter(|&i| i != best)
            .reduce(|m, i| if self.cmp_rows(i, m).is_lt() { i } else { m });
        let batch = self.inputs[best].current.as_ref().expect("live");
        let start = self.inputs[best].pos;
        let limit = batch.num_rows().min(start + max.max(1));
        let mut end = start + 1;
        match runner_up {
            None => end = limit,
            Some(r) => {
                let rb = self.inputs[r].current.as_ref().expect("live");
                let (rt, rk, rpos) = (
                    rb.ts(self.time_col, self.inputs[r].pos),
                    rb,
                    self.inputs[r].pos,
                );
                while end < limit {
                    let t = batch.ts(self.time_col, end);
                    let before = match t.cmp(&rt) {
                        Ordering::Less => true,
                        Ordering::Greater => false,
                        Ordering::Equal => {
                            match batch.str(self.key_col, end).cmp(rk.str(self.key_col, rpos)) {
                                Ordering::Less => true,
                                Ordering::Greater => false,
                                Ordering::Equal => best < r,
                            }
                        }
                    };
                    if !before {
                        break;
                    }
                    end += 1;
                }
            }
        }
        self.inputs[best].pos = end;
        Ok(Some((best, start..end)))
    }

    /// The current batch of input `i` (valid for the run just returned).
    pub(crate) fn batch(&self, i: usize) -> &EncodedBatch {
        self.inputs[i].current.as_ref().expect("run input is live")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn batch(rows: &[(i64, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("id", DataType::Utf8, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn merged(inputs: Vec<Vec<Vec<(i64, &'static str)>>>, max: usize) -> Vec<(i64, String)> {
        let mut rxs = Vec::new();
        for batches in inputs {
            let (tx, rx) = mpsc::channel(batches.len().max(1));
            for b in batches {
                tx.try_send(Ok(batch(&b))).unwrap();
            }
            rxs.push(rx);
        }
        let mut m = SortedMerge::new(rxs, 0, 1).unwrap();
        let mut out = Vec::new();
        while let Some((i, range)) = m.next_run(max).unwrap() {
            let b = m.batch(i);
            for r in range {
                out.push((b.ts(0, r), b.str(1, r).to_string()));
            }
        }
        out
    }

    #[test]
    fn merges_in_time_then_key_order() {
        let got = merged(
            vec![
                vec![vec![(1, "a"), (3, "a"), (5, "z")], vec![], vec![(9, "a")]],
                vec![vec![(2, "b"), (3, "b"), (4, "c")]],
                vec![],
                vec![vec![(5, "m"), (5, "n")], vec![(10, "x")]],
            ],
            3,
        );
        let want: Vec<(i64, String)> = [
            (1, "a"),
            (2, "b"),
            (3, "a"),
            (3, "b"),
            (4, "c"),
            (5, "m"),
            (5, "n"),
            (5, "z"),
            (9, "a"),
            (10, "x"),
        ]
        .iter()
        .map(|(t, s)| (*t, s.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn single_input_passes_through_in_runs_of_max() {
        let got = merged(vec![vec![vec![(1, "a"), (2, "a"), (3, "a")]]], 2);
        assert_eq!(got.len(), 3);
    }
}
