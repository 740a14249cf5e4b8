//! Schedule periods: which data window each export of a schedule covers, when it may
//! run and what it is called. Pure calendar arithmetic: the current time is always
//! passed in, and nothing here reads the clock or does I/O.
//!
//! A schedule has a [`Cadence`] and an IANA timezone ([`Tz`]). Calendar cadences cut
//! time at local midnight in that timezone:
//!
//! - `weekly`: ISO 8601 weeks, Monday 00:00 to the next Monday 00:00, labelled with the
//!   ISO week-year and week number (`2026-W53`; 2027-01-01 belongs to 2026-W53);
//! - `monthly`: calendar months, labelled `2026-03`;
//! - `quarterly`: January–March, April–June, July–September and October–December,
//!   labelled `2026-Q1`.
//!
//! Local midnight is mapped to an instant as follows: if it does not exist (a DST gap at
//! midnight, as in America/Santiago or America/Havana) the boundary is the first instant
//! after the gap; if it happens twice (a clock set back over midnight) the boundary is
//! the earlier one. Every boundary is therefore one instant, periods tile time without
//! gaps or overlaps, and a DST change only makes a period an hour longer or shorter.
//!
//! A `cron` cadence fires at the local wall-clock times its expression names; each fire
//! closes a period that began at the previous fire. The `cron` crate is only asked for
//! wall-clock times (it is run in UTC, which has no DST), because run in a DST timezone
//! it fires twice in a repeated hour and not at all in a skipped one. Each wall-clock
//! time is then mapped to an instant like a boundary above: a time in the repeated hour
//! fires once, at its first occurrence; a time in a skipped hour fires once, at the
//! first instant after the gap (02:30 on the night New York springs forward fires at
//! 03:00 EDT); wall-clock times that land on the same instant fire once.

use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, Duration, LocalResult, Months, NaiveDate, NaiveDateTime, NaiveTime,
    Offset, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use cron::{Schedule, TimeUnitSpec};

/// The longest export name [`render_name`] produces, in characters (Unicode scalar
/// values, not bytes).
pub const MAX_NAME_CHARS: usize = 200;

/// How often a schedule exports, and so how its periods are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cadence {
    /// The previous ISO 8601 week (Monday to Sunday), due on Monday.
    Weekly,
    /// The previous calendar month, due on the 1st.
    Monthly,
    /// The previous calendar quarter, due on the 1st of January, April, July or October.
    Quarterly,
    /// From one fire of a cron expression to the next, due at each fire.
    Cron(CronSpec),
}

impl Cadence {
    /// Builds a cadence from a schedule's stored `kind` (`weekly`, `monthly`,
    /// `quarterly` or `cron`, lower case) and its cron expression, which `cron` requires
    /// and the calendar kinds refuse (see [`CronSpec::parse`] for the syntax).
    pub fn parse(kind: &str, cron: Option<&str>) -> Result<Cadence, PeriodError> {
        let cadence = match kind {
            "weekly" => Cadence::Weekly,
            "monthly" => Cadence::Monthly,
            "quarterly" => Cadence::Quarterly,
            "cron" => {
                let expression = cron.ok_or(PeriodError::MissingCron)?;
                return CronSpec::parse(expression).map(Cadence::Cron);
            }
            other => return Err(PeriodError::UnknownKind(other.to_string())),
        };
        match cron {
            Some(_) => Err(PeriodError::UnexpectedCron {
                kind: cadence.kind(),
            }),
            None => Ok(cadence),
        }
    }

    /// The stored kind: `weekly`, `monthly`, `quarterly` or `cron`; the inverse of
    /// [`Cadence::parse`] together with [`CronSpec::source`].
    pub fn kind(&self) -> &'static str {
        match self {
            Cadence::Weekly => "weekly",
            Cadence::Monthly => "monthly",
            Cadence::Quarterly => "quarterly",
            Cadence::Cron(_) => "cron",
        }
    }

    fn rule(&self) -> Rule<'_> {
        match self {
            Cadence::Weekly => Rule::Calendar(CalendarUnit::Week),
            Cadence::Monthly => Rule::Calendar(CalendarUnit::Month),
            Cadence::Quarterly => Rule::Calendar(CalendarUnit::Quarter),
            Cadence::Cron(spec) => Rule::Cron(spec),
        }
    }
}

/// A validated cron expression, read in the schedule's local wall-clock time.
///
/// Accepted forms, fields separated by whitespace:
///
/// - 5 fields, as in crontab(5): `minute hour day-of-month month day-of-week`
///   (fires at second 0);
/// - 6 or 7 fields, as the `cron` crate reads them: `second minute hour day-of-month
///   month day-of-week [year]` (years 1970–2100);
/// - one of the crate's shorthands `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
///
/// In every form the day of week is numbered as in crontab(5), 0–7 with both 0 and 7
/// meaning Sunday, or named (`sun`–`sat`, `sunday`–`saturday`), as single days,
/// ranges (`1-5`, `mon-fri`) or stepped ranges (`*/2`, `1-5/2`). (The crate itself
/// numbers Sunday 1 to Saturday 7; the field is translated before it sees it, so one
/// digit means one day whatever the form.) An expression may not restrict both the day
/// of month and the day of week: crontab(5) fires when either matches, the crate when
/// both do, and a schedule must not depend on which reading is meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    /// The expression as given (trimmed).
    source: String,
    /// The expression as the crate reads it: seconds first, weekdays renumbered. Boxed
    /// because a parsed schedule is a few hundred bytes and `Cadence` is passed around.
    schedule: Box<Schedule>,
    /// Whether any fire has a non-zero second, so labels need seconds.
    with_seconds: bool,
}

impl CronSpec {
    /// Parses and validates `expression` (see the type's documentation for the syntax).
    /// Fails if the expression is malformed or never fires between 1970 and 2100.
    pub fn parse(expression: &str) -> Result<CronSpec, PeriodError> {
        let source = expression.trim().to_string();
        let fields: Vec<&str> = source.split_whitespace().collect();
        let crate_form = match fields.as_slice() {
            [shorthand] if shorthand.starts_with('@') => shorthand.to_string(),
            [minute, hour, day, month, weekday] => {
                let weekday = crate_weekdays(&source, day, weekday)?;
                format!("0 {minute} {hour} {day} {month} {weekday}")
            }
            [second, minute, hour, day, month, weekday, year @ ..] if year.len() <= 1 => {
                let weekday = crate_weekdays(&source, day, weekday)?;
                let year = year.first().map(|y| format!(" {y}")).unwrap_or_default();
                format!("{second} {minute} {hour} {day} {month} {weekday}{year}")
            }
            _ => {
                return Err(PeriodError::CronFieldCount {
                    count: fields.len(),
                    expression: source,
                });
            }
        };
        let schedule = Schedule::from_str(&crate_form).map_err(|e| PeriodError::CronSyntax {
            expression: source.clone(),
            // The crate's message spans lines and shows its own seconds-first form
            // with a caret; its last line says what is wrong.
            reason: e
                .to_string()
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty() && !l.starts_with('^'))
                .unwrap_or_default()
                .replace("Minutes must be less than 59", "Minutes must be at most 59")
                .replace("Hours must be less than 23", "Hours must be at most 23")
                .replace("Seconds must be less than 59", "Seconds must be at most 59"),
        })?;
        if schedule.after(&DateTime::UNIX_EPOCH).next().is_none() {
            return Err(PeriodError::CronNeverFires { expression: source });
        }
        let with_seconds = schedule.seconds().iter().any(|second| second != 0);
        Ok(CronSpec {
            source,
            schedule: Box::new(schedule),
            with_seconds,
        })
    }

    /// The expression as given, trimmed; what a store keeps next to the kind `cron`.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// One period of a schedule: the data window an export covers and when it may run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// Names the period in the schedule's local calendar: `2026-W13` (ISO 8601
    /// week-year and week), `2026-03` (month), `2026-Q1` (quarter), or for cron the
    /// local wall-clock time of the fire that closes it, to the minute
    /// (`2026-03-08T02:30`, the time the expression names even when a DST gap moves the
    /// fire), with `:SS` added when the expression fires at a non-zero second.
    pub label: String,
    /// Inclusive start of the data window: local midnight of the first day, or the
    /// previous cron fire.
    pub start: DateTime<Utc>,
    /// Exclusive end of the data window: local midnight after the last day, or this
    /// cron fire.
    pub end: DateTime<Utc>,
    /// When the export may run: `end` plus the schedule's delay.
    pub due: DateTime<Utc>,
}

/// Why a cadence or an export name was refused. Every variant is a fault in what the
/// user configured; the message names the offending input and can be shown as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// The schedule kind is not one of the four this module knows.
    #[error("schedule kind must be weekly, monthly, quarterly or cron, not '{0}'")]
    UnknownKind(String),
    /// The kind is `cron` but no expression was given.
    #[error("schedule kind 'cron' needs a cron expression")]
    MissingCron,
    /// A cron expression was given with a calendar kind, whose periods are fixed.
    #[error("a cron expression is only used with kind 'cron'; kind '{kind}' has fixed periods")]
    UnexpectedCron {
        /// The calendar kind that was given.
        kind: &'static str,
    },
    /// The expression has neither 5, 6 nor 7 fields, nor is it one `@` shorthand.
    #[error(
        "cron: expected 5 fields (minute hour day month weekday) or 6/7 with seconds/year, \
         got {count} in '{expression}'"
    )]
    CronFieldCount {
        /// The expression as given.
        expression: String,
        /// How many whitespace-separated fields it has.
        count: usize,
    },
    /// An item of the day-of-week field is not a day (0–7 or a name), a range of days
    /// or a stepped range.
    #[error("cron: day of week '{item}' in '{expression}': {reason}")]
    CronWeekday {
        /// The expression as given.
        expression: String,
        /// The comma-separated item at fault.
        item: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Both the day of month and the day of week are restricted (see [`CronSpec`]).
    #[error(
        "cron: '{expression}' restricts both the day of month and the day of week, which \
         cron implementations read differently (either or both); restrict only one and \
         put '*' in the other"
    )]
    CronDayConflict {
        /// The expression as given.
        expression: String,
    },
    /// The `cron` crate rejected the expression.
    #[error("cron: invalid expression '{expression}': {reason}")]
    CronSyntax {
        /// The expression as given.
        expression: String,
        /// The crate's message.
        reason: String,
    },
    /// The expression is valid but names no time between 1970 and 2100 (`0 0 30 2 *`).
    #[error("cron: '{expression}' never fires between 1970 and 2100")]
    CronNeverFires {
        /// The expression as given.
        expression: String,
    },
    /// A `{...}` in a name template is not `{name}` or `{period}`.
    #[error(
        "name template: unknown placeholder '{{{placeholder}}}'; the placeholders are \
         {{name}} and {{period}}"
    )]
    UnknownPlaceholder {
        /// The text between the braces.
        placeholder: String,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("name template: unmatched '{brace}' at character {position} of '{template}'")]
    UnbalancedBrace {
        /// The template as given.
        template: String,
        /// The brace without a partner.
        brace: char,
        /// Its position in the template, counting characters from 1.
        position: usize,
    },
    /// The rendered name is empty.
    #[error("the export name is empty")]
    EmptyName,
    /// The rendered name is longer than [`MAX_NAME_CHARS`].
    #[error(
        "the export name is {chars} characters long; at most {max} are allowed",
        max = MAX_NAME_CHARS
    )]
    NameTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// The rendered name contains a control character, `/` or `\`.
    #[error(
        "the export name {name:?} contains {found:?}; control characters, '/' and '\\' \
         are not allowed"
    )]
    ForbiddenChar {
        /// The rendered name.
        name: String,
        /// The first forbidden character in it.
        found: char,
    },
}

/// The latest period of `cadence` in `tz` whose `end` is at or before `t`: the one a
/// "run now" request exports. Its `due` equals its `end` (no delay applies to a run
/// the user asks for). `None` only if there is no such period: a cron expression that
/// has not fired twice by `t`, or a date outside chrono's range.
pub fn period_ending_at_or_before(cadence: &Cadence, tz: Tz, t: DateTime<Utc>) -> Option<Period> {
    match cadence.rule() {
        Rule::Calendar(unit) => {
            let start = unit.prev(unit.last_start_at_or_before(tz, t)?)?;
            unit.period(tz, start, Duration::zero())
        }
        Rule::Cron(spec) => cron_period_ending_at_or_before(spec, tz, t),
    }
}

/// The periods of `cadence` in `tz` that are ready to export: every period whose `end`
/// is after `after` and whose `due` (`end + delay`) is at or before `now`, oldest first.
///
/// `after` is the `end` of the last period already exported, or the schedule's creation
/// time for a new one (so a monthly schedule created on 15 March first exports March,
/// on 1 April). At most `cap` periods are returned, and they are the OLDEST `cap`: after
/// an outage the caller runs them and calls again with `after` set to the last one's
/// `end`, catching up in order. Work is proportional to the periods returned, not to the
/// length of the outage. `delay` is normally zero or positive; a period whose `due`
/// would overflow chrono's range is never returned.
pub fn periods_due(
    cadence: &Cadence,
    tz: Tz,
    delay: Duration,
    after: DateTime<Utc>,
    now: DateTime<Utc>,
    cap: usize,
) -> Vec<Period> {
    periods_ending_after(cadence, tz, delay, after)
        .take_while(|period| period.due <= now)
        .take(cap)
        .collect()
}

/// The next `n` instants strictly after `now` at which a period of `cadence` becomes
/// due (`end + delay`), earliest first, in the schedule's timezone `tz` for display.
/// Fewer than `n` if the schedule stops firing (a cron year field, or 2100).
pub fn next_runs(
    cadence: &Cadence,
    tz: Tz,
    delay: Duration,
    now: DateTime<Utc>,
    n: usize,
) -> Vec<DateTime<Tz>> {
    // A period is due after `now` exactly when it ends after `now - delay`.
    let Some(after) = now.checked_sub_signed(delay) else {
        return Vec::new();
    };
    periods_ending_after(cadence, tz, delay, after)
        .take(n)
        .map(|period| period.due.with_timezone(&tz))
        .collect()
}

/// Renders an export name from a schedule's `template`, replacing `{name}` with the
/// schedule's `name` and `{period}` with the period's label: `{name}-{period}` gives
/// `SOC2-2026-Q1`. There is no escape for literal braces.
///
/// Fails on a placeholder other than those two, on an unmatched brace, and on a result
/// that is empty, longer than [`MAX_NAME_CHARS`] characters, or contains a control
/// character, `/` or `\` (names become file and object names).
pub fn render_name(template: &str, name: &str, period: &Period) -> Result<String, PeriodError> {
    let unbalanced = |brace: char, byte: usize| PeriodError::UnbalancedBrace {
        template: template.to_string(),
        brace,
        position: template[..byte].chars().count() + 1,
    };
    let mut rendered = String::with_capacity(template.len() + name.len() + period.label.len());
    let mut rest = 0;
    while let Some(found) = template[rest..].find(['{', '}']) {
        let open = rest + found;
        rendered.push_str(&template[rest..open]);
        if template[open..].starts_with('}') {
            return Err(unbalanced('}', open));
        }
        let inner = open + 1;
        let close = match template[inner..].find(['{', '}']) {
            Some(i) if template[inner + i..].starts_with('}') => inner + i,
            _ => return Err(unbalanced('{', open)),
        };
        match &template[inner..close] {
            "name" => rendered.push_str(name),
            "period" => rendered.push_str(&period.label),
            other => {
                return Err(PeriodError::UnknownPlaceholder {
                    placeholder: other.to_string(),
                });
            }
        }
        rest = close + 1;
    }
    rendered.push_str(&template[rest..]);

    if rendered.is_empty() {
        return Err(PeriodError::EmptyName);
    }
    let chars = rendered.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(PeriodError::NameTooLong { chars });
    }
    if let Some(found) = rendered
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '\\'))
    {
        return Err(PeriodError::ForbiddenChar {
            name: rendered,
            found,
        });
    }
    Ok(rendered)
}

/// How a cadence cuts time.
enum Rule<'a> {
    Calendar(CalendarUnit),
    Cron(&'a CronSpec),
}

/// Every period whose `end` is after `after`, oldest first, with `due = end + delay`.
fn periods_ending_after<'a>(
    cadence: &'a Cadence,
    tz: Tz,
    delay: Duration,
    after: DateTime<Utc>,
) -> Box<dyn Iterator<Item = Period> + 'a> {
    match cadence.rule() {
        Rule::Calendar(unit) => {
            // The period starting at the last boundary at or before `after` is the first
            // to end after it.
            let first = unit.last_start_at_or_before(tz, after);
            Box::new(
                std::iter::successors(first, move |&start| unit.next(start))
                    .map_while(move |start| unit.period(tz, start, delay)),
            )
        }
        Rule::Cron(spec) => {
            let mut previous: Option<DateTime<Utc>> = None;
            Box::new(fires_after(spec, tz, after).filter_map(move |fire| {
                let start = match previous.replace(fire.at) {
                    Some(start) => Some(start),
                    None => fire_before(spec, tz, &fire),
                };
                cron_period(spec, &fire, start?, delay)
            }))
        }
    }
}

/// A calendar cadence's unit, in local dates.
#[derive(Debug, Clone, Copy)]
enum CalendarUnit {
    Week,
    Month,
    Quarter,
}

impl CalendarUnit {
    /// The first day of the unit containing `day`.
    fn start_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            CalendarUnit::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
            CalendarUnit::Month => day - Days::new(u64::from(day.day0())),
            CalendarUnit::Quarter => {
                let month = day.month0() / 3 * 3 + 1;
                NaiveDate::from_ymd_opt(day.year(), month, 1).expect("quarters start on a 1st")
            }
        }
    }

    /// The first day of the unit after the one starting on `start`.
    fn next(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            CalendarUnit::Week => start.checked_add_days(Days::new(7)),
            CalendarUnit::Month => start.checked_add_months(Months::new(1)),
            CalendarUnit::Quarter => start.checked_add_months(Months::new(3)),
        }
    }

    /// The first day of the unit before the one starting on `start`.
    fn prev(self, start: NaiveDate) -> Option<NaiveDate> {
        match self {
            CalendarUnit::Week => start.checked_sub_days(Days::new(7)),
            CalendarUnit::Month => start.checked_sub_months(Months::new(1)),
            CalendarUnit::Quarter => start.checked_sub_months(Months::new(3)),
        }
    }

    fn label(self, start: NaiveDate) -> String {
        match self {
            CalendarUnit::Week => {
                let week = start.iso_week();
                format!("{:04}-W{:02}", week.year(), week.week())
            }
            CalendarUnit::Month => format!("{:04}-{:02}", start.year(), start.month()),
            CalendarUnit::Quarter => format!("{:04}-Q{}", start.year(), start.month0() / 3 + 1),
        }
    }

    /// The period of the unit starting on local day `start`.
    fn period(self, tz: Tz, start: NaiveDate, delay: Duration) -> Option<Period> {
        let end = local_midnight(tz, self.next(start)?);
        Some(Period {
            label: self.label(start),
            start: local_midnight(tz, start),
            end,
            due: end.checked_add_signed(delay)?,
        })
    }

    /// The first day of the latest unit whose start (local midnight) is at or before `t`.
    fn last_start_at_or_before(self, tz: Tz, t: DateTime<Utc>) -> Option<NaiveDate> {
        let mut start = self.start_of(t.with_timezone(&tz).date_naive());
        // The local date of `t` is only a first guess: a clock set back over midnight
        // repeats part of the previous day after the boundary instant.
        while let Some(next) = self.next(start)
            && local_midnight(tz, next) <= t
        {
            start = next;
        }
        while local_midnight(tz, start) > t {
            start = self.prev(start)?;
        }
        Some(start)
    }
}

/// The instant local midnight starts `day` in `tz` (see [`resolve_local`]).
fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    resolve_local(tz, day.and_time(NaiveTime::MIN))
}

/// The instant a local wall-clock time names in `tz`: the earlier of two in a repeated
/// hour, and the first instant after the gap for a time the clocks skip.
fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(at) => at.to_utc(),
        LocalResult::Ambiguous(a, b) => a.min(b).to_utc(),
        LocalResult::None => first_instant_after_gap(tz, local),
    }
}

/// The instant a DST gap containing the nonexistent local time `local` ends: the first
/// instant whose local time is later than `local`. Found by bisection over whole seconds
/// (zone transitions are on whole seconds); the local time a day before (in UTC terms)
/// is earlier and a day after is later whatever the offset, so those bound the search,
/// and only a zone that skips `local` twice within two days could mislead it.
fn first_instant_after_gap(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let at = |seconds: i64| {
        DateTime::from_timestamp(seconds, 0).expect("a DST gap is far from chrono's range ends")
    };
    let later = |seconds: i64| at(seconds).with_timezone(&tz).naive_local() > local;
    let naive_seconds = local.and_utc().timestamp();
    let (mut earlier_bound, mut later_bound) = (naive_seconds - 86_400, naive_seconds + 86_400);
    while later_bound - earlier_bound > 1 {
        let middle = earlier_bound + (later_bound - earlier_bound) / 2;
        if later(middle) {
            later_bound = middle;
        } else {
            earlier_bound = middle;
        }
    }
    at(later_bound)
}

/// One fire of a cron expression: the wall-clock time it names and its instant.
#[derive(Debug, Clone, Copy)]
struct Fire {
    wall: NaiveDateTime,
    at: DateTime<Utc>,
}

impl Fire {
    fn new(tz: Tz, wall: DateTime<Utc>) -> Fire {
        // The crate runs in UTC, so its "UTC" time is the local wall-clock time.
        let wall = wall.naive_utc();
        Fire {
            wall,
            at: resolve_local(tz, wall),
        }
    }
}

/// The fires whose instant is after `after`, in order, one per instant (the first
/// wall-clock time that lands on it).
///
/// Mapping wall-clock times to instants never goes backwards, and the wall-clock time
/// of `after` maps to `after` or earlier, so no fire after `after` has an earlier
/// wall-clock time; the crate's strict `after` iterator can start there. Times in a
/// repeated hour that map before `after` are skipped.
fn fires_after(spec: &CronSpec, tz: Tz, after: DateTime<Utc>) -> impl Iterator<Item = Fire> + '_ {
    let wall = after.with_timezone(&tz).naive_local().and_utc();
    let mut last = after;
    spec.schedule
        .after(&wall)
        .map(move |wall| Fire::new(tz, wall))
        .filter(move |fire| {
            let new = fire.at > last;
            if new {
                last = fire.at;
            }
            new
        })
}

/// The fires with a wall-clock time strictly before `wall` (a whole second), newest
/// first, including fires that share an instant.
fn fires_before_wall(
    spec: &CronSpec,
    tz: Tz,
    wall: NaiveDateTime,
) -> impl Iterator<Item = Fire> + '_ {
    spec.schedule
        .after(&wall.and_utc())
        .rev()
        .map(move |wall| Fire::new(tz, wall))
}

/// The instant of the latest fire before `fire`'s instant: where its period starts.
fn fire_before(spec: &CronSpec, tz: Tz, fire: &Fire) -> Option<DateTime<Utc>> {
    fires_before_wall(spec, tz, fire.wall)
        .map(|earlier| earlier.at)
        .find(|at| *at < fire.at)
}

fn cron_period(
    spec: &CronSpec,
    fire: &Fire,
    start: DateTime<Utc>,
    delay: Duration,
) -> Option<Period> {
    let format = if spec.with_seconds {
        "%Y-%m-%dT%H:%M:%S"
    } else {
        "%Y-%m-%dT%H:%M"
    };
    Some(Period {
        label: fire.wall.format(format).to_string(),
        start,
        end: fire.at,
        due: fire.at.checked_add_signed(delay)?,
    })
}

/// The period closed by the latest fire at or before `t`.
fn cron_period_ending_at_or_before(spec: &CronSpec, tz: Tz, t: DateTime<Utc>) -> Option<Period> {
    // A fire at or before `t` can have a wall-clock time later than `t`'s own (`t` in
    // the second pass of a repeated hour, the fire in the first), but none later than
    // `t` read with the largest offset of the last two days.
    let offset = |at: DateTime<Utc>| {
        let offset = tz.offset_from_utc_datetime(&at.naive_utc()).fix();
        i64::from(offset.local_minus_utc())
    };
    let ahead = [1, 2]
        .into_iter()
        .filter_map(|days| t.checked_sub_signed(Duration::days(days)))
        .map(offset)
        .fold(offset(t), i64::max);
    let bound = t.naive_utc().with_nanosecond(0)? + Duration::seconds(ahead + 1);

    // Fires that share an instant come newest first here; the period is labelled with
    // the earliest of them, as `fires_after` does.
    let mut fires = fires_before_wall(spec, tz, bound).skip_while(|fire| fire.at > t);
    let mut end = fires.next()?;
    let start = loop {
        let earlier = fires.next()?;
        if earlier.at < end.at {
            break earlier.at;
        }
        end.wall = earlier.wall;
    };
    cron_period(spec, &end, start, Duration::zero())
}

/// Rewrites a crontab(5) day-of-week field (0–7, Sunday 0 or 7, or names) in the cron
/// crate's numbering (1–7, Sunday 1) as an explicit list, after checking that the day
/// of month is not restricted too.
fn crate_weekdays(
    expression: &str,
    day_of_month: &str,
    field: &str,
) -> Result<String, PeriodError> {
    let unrestricted = |field: &str| matches!(field, "*" | "?");
    if unrestricted(field) {
        return Ok(field.to_string());
    }
    if !unrestricted(day_of_month) {
        return Err(PeriodError::CronDayConflict {
            expression: expression.to_string(),
        });
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let fault = |reason| PeriodError::CronWeekday {
            expression: expression.to_string(),
            item: item.to_string(),
            reason,
        };
        let (range, step) = match item.split_once('/') {
            None => (item, 1),
            Some((range, step)) => {
                let step = step
                    .parse::<u32>()
                    .ok()
                    .filter(|step| (1..=7).contains(step))
                    .ok_or_else(|| fault("the step after '/' must be a number from 1 to 7"))?;
                (range, step)
            }
        };
        let (first, last) = match range.split_once('-') {
            _ if unrestricted(range) => (Some(0), Some(6)),
            Some((first, last)) => (weekday_number(first), weekday_number(last)),
            // crontab(5) allows a step only after '*' or a range; "1/2" reads differently
            // in different implementations.
            None if step > 1 => {
                return Err(fault(
                    "a step needs '*' or a range before it, as in '1-5/2'",
                ));
            }
            None => (weekday_number(range), weekday_number(range)),
        };
        let (Some(first), Some(last)) = (first, last) else {
            return Err(fault(
                "days are 0-7 (Sunday is 0 or 7) or names such as 'mon'",
            ));
        };
        if first > last {
            return Err(fault(
                "a range must not run backwards (Sunday is both 0 and 7, as in '5-7')",
            ));
        }
        for day in (first..=last).step_by(step as usize) {
            days[day as usize % 7] = true;
        }
    }
    let crate_days: Vec<String> = (0..7)
        .filter(|&day| days[day])
        .map(|day| (day + 1).to_string())
        .collect();
    Ok(crate_days.join(","))
}

/// A crontab(5) day of week: 0–7 (Sunday is 0 and 7) or an English name, in full or
/// its first three letters, in any case.
fn weekday_number(token: &str) -> Option<u32> {
    const NAMES: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return token.parse().ok().filter(|day| *day <= 7);
    }
    let token = token.to_ascii_lowercase();
    let day = NAMES
        .iter()
        .position(|name| token == *name || token == name[..3])?;
    u32::try_from(day).ok()
}

#[cfg(test)]
mod tests;
