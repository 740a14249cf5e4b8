//! `local_date(timestamp)`: the calendar date of an instant in the export's timezone,
//! as `YYYY-MM-DD`, so SQL definitions can group by the days the user asked for.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use deltalake::arrow::array::{Array, AsArray, StringBuilder};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use deltalake::datafusion::common::{DataFusionError, Result as DfResult};
use deltalake::datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The function, bound to `tz`.
pub fn udf(tz: Tz) -> ScalarUDF {
    ScalarUDF::new_from_impl(LocalDate {
        tz,
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LocalDate {
    tz: Tz,
    signature: Signature,
}

fn day(tz: Tz, micros: i64) -> Option<String> {
    Utc.timestamp_micros(micros)
        .single()
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d").to_string())
}

impl ScalarUDFImpl for LocalDate {
    fn name(&self) -> &str {
        "local_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types.first() {
            Some(DataType::Timestamp(_, _)) => Ok(DataType::Utf8),
            other => Err(DataFusionError::Plan(format!(
                "local_date takes a timestamp, not {other:?}"
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let arg =
            args.args.into_iter().next().ok_or_else(|| {
                DataFusionError::Plan("local_date takes one argument".to_string())
            })?;
        let array = arg.into_array(args.number_rows)?;
        let array = cast(&array, &target)?;
        let ts = array.as_primitive::<TimestampMicrosecondType>();
        let mut out = StringBuilder::with_capacity(ts.len(), ts.len() * 10);
        // Rows arrive mostly in time order: reuse the last day's text while the
        // instant stays inside it.
        let mut cached: Option<(i64, i64, String)> = None;
        for i in 0..ts.len() {
            if ts.is_null(i) {
                out.append_null();
                continue;
            }
            let v = ts.value(i);
            match &cached {
                Some((lo, hi, s)) if v >= *lo && v < *hi => out.append_value(s),
                _ => match day(self.tz, v) {
                    Some(s) => {
                        // The hour containing `v` has one local date in every zone
                        // whose offsets are whole quarter hours.
                        let lo = v - v.rem_euclid(900_000_000);
                        let hi = lo + 900_000_000;
                        let same = day(self.tz, lo).as_deref() == Some(s.as_str())
                            && day(self.tz, hi - 1).as_deref() == Some(s.as_str());
                        out.append_value(&s);
                        cached = same.then_some((lo, hi, s));
                    }
                    None => out.append_null(),
                },
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
