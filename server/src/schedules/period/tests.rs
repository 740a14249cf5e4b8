//! Tests of the period calculus: exact UTC instants for month, quarter, year and
//! DST boundaries in real timezones, cron fires across DST changes, catch-up.
use super::*;

const NEW_YORK: Tz = chrono_tz::America::New_York;
const BERLIN: Tz = chrono_tz::Europe::Berlin;
const UTC: Tz = Tz::UTC;

/// An instant written `2026-03-01T05:00Z` or `2026-03-01T05:00:15Z`.
fn utc(text: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%MZ")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%SZ"))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .and_utc()
}

/// A period as `label [start, end)`, instants written as [`utc`] reads them.
fn show(period: &Period) -> String {
    let at = |t: DateTime<Utc>| match t.second() {
        0 => t.format("%Y-%m-%dT%H:%MZ").to_string(),
        _ => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    format!(
        "{} [{}, {})",
        period.label,
        at(period.start),
        at(period.end)
    )
}

fn cron(expression: &str) -> Cadence {
    Cadence::parse("cron", Some(expression)).unwrap_or_else(|e| panic!("{e}"))
}

/// A schedule under test: a cadence in a timezone.
struct Check {
    cadence: Cadence,
    tz: Tz,
}

fn check(cadence: Cadence, tz: Tz) -> Check {
    Check { cadence, tz }
}

impl Check {
    /// The periods that end in `(after, until]`, with no delay.
    fn ending_in(&self, after: &str, until: &str) -> Vec<String> {
        let (after, until) = (utc(after), utc(until));
        let due = periods_due(
            &self.cadence,
            self.tz,
            Duration::zero(),
            after,
            until,
            1_000,
        );
        due.iter().map(show).collect()
    }

    /// The period "run now" at `t` exports.
    fn run_now(&self, t: &str) -> String {
        let period = period_ending_at_or_before(&self.cadence, self.tz, utc(t)).expect("a period");
        assert_eq!(period.due, period.end, "no delay applies to run now");
        show(&period)
    }

    /// [`periods_due`] with a delay in hours.
    fn due(&self, delay_hours: i64, after: &str, now: &str, cap: usize) -> Vec<Period> {
        let delay = Duration::hours(delay_hours);
        periods_due(&self.cadence, self.tz, delay, utc(after), utc(now), cap)
    }

    /// [`next_runs`] with a delay in hours, shown in RFC 3339 with the local offset.
    fn next_runs(&self, delay_hours: i64, now: &str, n: usize) -> Vec<String> {
        let runs = next_runs(
            &self.cadence,
            self.tz,
            Duration::hours(delay_hours),
            utc(now),
            n,
        );
        assert!(runs.iter().all(|run| run.timezone() == self.tz));
        runs.iter().map(DateTime::to_rfc3339).collect()
    }
}

#[test]
fn monthly_in_new_york_across_both_dst_changes() {
    // DST starts on 2026-03-08 and ends on 2026-11-01.
    let monthly = check(Cadence::Monthly, NEW_YORK);
    assert_eq!(
        monthly.run_now("2026-04-15T12:00Z"),
        "2026-03 [2026-03-01T05:00Z, 2026-04-01T04:00Z)"
    );
    // A period that ends exactly at `t` has ended.
    assert_eq!(
        monthly.run_now("2026-12-01T05:00Z"),
        "2026-11 [2026-11-01T04:00Z, 2026-12-01T05:00Z)"
    );
    assert_eq!(
        monthly.run_now("2026-12-01T04:59:59Z"),
        "2026-10 [2026-10-01T04:00Z, 2026-11-01T04:00Z)"
    );
}

#[test]
fn monthly_in_berlin_and_in_leap_years() {
    let berlin = check(Cadence::Monthly, BERLIN);
    assert_eq!(
        berlin.run_now("2026-04-01T00:00Z"),
        "2026-03 [2026-02-28T23:00Z, 2026-03-31T22:00Z)"
    );
    let utc_monthly = check(Cadence::Monthly, UTC);
    assert_eq!(
        utc_monthly.ending_in("2028-01-31T00:00Z", "2028-03-01T00:00Z"),
        [
            "2028-01 [2028-01-01T00:00Z, 2028-02-01T00:00Z)",
            "2028-02 [2028-02-01T00:00Z, 2028-03-01T00:00Z)",
        ]
    );
    assert_eq!(
        utc_monthly.run_now("2027-03-01T00:00Z"),
        "2027-02 [2027-02-01T00:00Z, 2027-03-01T00:00Z)"
    );
}

#[test]
fn quarterly_across_the_year_end_in_berlin() {
    let quarterly = check(Cadence::Quarterly, BERLIN);
    assert_eq!(
        quarterly.ending_in("2026-12-01T00:00Z", "2027-06-30T21:59Z"),
        [
            "2026-Q4 [2026-09-30T22:00Z, 2026-12-31T23:00Z)",
            "2027-Q1 [2026-12-31T23:00Z, 2027-03-31T22:00Z)",
        ]
    );
    assert_eq!(
        quarterly.ending_in("2027-03-31T22:00Z", "2027-06-30T22:00Z"),
        ["2027-Q2 [2027-03-31T22:00Z, 2027-06-30T22:00Z)"]
    );
}

#[test]
fn weekly_weeks_holding_the_us_dst_changes_are_an_hour_short_or_long() {
    // 2026-03-08 (spring) is the Sunday of 2026-W10; 2026-11-01 (autumn) of 2026-W44.
    let weekly = check(Cadence::Weekly, NEW_YORK);
    assert_eq!(
        weekly.run_now("2026-03-09T04:00Z"),
        "2026-W10 [2026-03-02T05:00Z, 2026-03-09T04:00Z)"
    );
    assert_eq!(
        weekly.run_now("2026-11-02T05:00Z"),
        "2026-W44 [2026-10-26T04:00Z, 2026-11-02T05:00Z)"
    );
}

#[test]
fn weekly_labels_use_the_iso_week_year_at_the_year_end() {
    // 2026 has 53 ISO weeks; 2027-01-01 (a Friday) is in 2026-W53.
    assert_eq!(
        check(Cadence::Weekly, NEW_YORK).ending_in("2026-12-25T00:00Z", "2027-01-12T00:00Z"),
        [
            "2026-W52 [2026-12-21T05:00Z, 2026-12-28T05:00Z)",
            "2026-W53 [2026-12-28T05:00Z, 2027-01-04T05:00Z)",
            "2027-W01 [2027-01-04T05:00Z, 2027-01-11T05:00Z)",
        ]
    );
    // 2025-12-29 starts 2026-W01 although it is in December.
    assert_eq!(
        check(Cadence::Weekly, UTC).run_now("2026-01-05T00:00Z"),
        "2026-W01 [2025-12-29T00:00Z, 2026-01-05T00:00Z)"
    );
}

#[test]
fn local_midnight_in_a_dst_gap_or_repeat() {
    let midnight = |tz: Tz, day: &str| {
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").expect("a date");
        local_midnight(tz, day)
    };
    // Havana springs forward from 00:00 to 01:00 on 2026-03-08 (UTC-5 to UTC-4).
    assert_eq!(
        midnight(chrono_tz::America::Havana, "2026-03-08"),
        utc("2026-03-08T05:00Z")
    );
    // Santiago springs forward from 00:00 to 01:00 on 2026-09-06 (UTC-4 to UTC-3).
    assert_eq!(
        midnight(chrono_tz::America::Santiago, "2026-09-06"),
        utc("2026-09-06T04:00Z")
    );
    // Santiago sets its clocks back from 00:00 to 23:00 on 2026-04-05, so the last
    // hour of 4 April repeats and midnight itself happens once, after the repeat.
    assert_eq!(
        midnight(chrono_tz::America::Santiago, "2026-04-05"),
        utc("2026-04-05T04:00Z")
    );
    // Havana sets its clocks back from 01:00 to 00:00 on 2026-11-01, so midnight
    // happens twice (04:00Z in CDT, 05:00Z in CST); the boundary is the first.
    assert_eq!(
        midnight(chrono_tz::America::Havana, "2026-11-01"),
        utc("2026-11-01T04:00Z")
    );
}

#[test]
fn month_boundaries_on_a_dst_change_at_midnight() {
    // Asuncion skipped from 00:00 to 01:00 on 2023-10-01 (UTC-4 to UTC-3).
    assert_eq!(
        check(Cadence::Monthly, chrono_tz::America::Asuncion)
            .ending_in("2023-09-15T00:00Z", "2023-11-01T03:00Z"),
        [
            "2023-09 [2023-09-01T04:00Z, 2023-10-01T04:00Z)",
            "2023-10 [2023-10-01T04:00Z, 2023-11-01T03:00Z)",
        ]
    );
    // Havana repeats 00:00-01:00 on 2026-11-01.
    let havana = check(Cadence::Monthly, chrono_tz::America::Havana);
    assert_eq!(
        havana.ending_in("2026-10-15T00:00Z", "2026-12-01T05:00Z"),
        [
            "2026-10 [2026-10-01T04:00Z, 2026-11-01T04:00Z)",
            "2026-11 [2026-11-01T04:00Z, 2026-12-01T05:00Z)",
        ]
    );
    // 05:30Z is 00:30 CST, in the repeat: October has ended, November has not.
    assert_eq!(
        havana.run_now("2026-11-01T05:30Z"),
        "2026-10 [2026-10-01T04:00Z, 2026-11-01T04:00Z)"
    );
}

#[test]
fn cron_in_a_repeated_hour_fires_once_at_the_first_pass() {
    // New York: 01:30 happens at 05:30Z (EDT) and 06:30Z (EST) on 2026-11-01.
    assert_eq!(
        check(cron("30 1 * * *"), NEW_YORK).ending_in("2026-10-31T12:00Z", "2026-11-02T12:00Z"),
        [
            "2026-11-01T01:30 [2026-10-31T05:30Z, 2026-11-01T05:30Z)",
            "2026-11-02T01:30 [2026-11-01T05:30Z, 2026-11-02T06:30Z)",
        ]
    );
    // Berlin: 02:30 happens at 00:30Z (CEST) and 01:30Z (CET) on 2026-10-25.
    assert_eq!(
        check(cron("30 2 * * *"), BERLIN).ending_in("2026-10-24T12:00Z", "2026-10-26T12:00Z"),
        [
            "2026-10-25T02:30 [2026-10-24T00:30Z, 2026-10-25T00:30Z)",
            "2026-10-26T02:30 [2026-10-25T00:30Z, 2026-10-26T01:30Z)",
        ]
    );
}

#[test]
fn cron_in_a_skipped_hour_fires_once_when_the_gap_ends() {
    // New York skips 02:00-03:00 on 2026-03-08; the clocks jump at 07:00Z.
    assert_eq!(
        check(cron("30 2 * * *"), NEW_YORK).ending_in("2026-03-07T12:00Z", "2026-03-09T12:00Z"),
        [
            "2026-03-08T02:30 [2026-03-07T07:30Z, 2026-03-08T07:00Z)",
            "2026-03-09T02:30 [2026-03-08T07:00Z, 2026-03-09T06:30Z)",
        ]
    );
    // Berlin skips 02:00-03:00 on 2026-03-29; the clocks jump at 01:00Z.
    assert_eq!(
        check(cron("30 2 * * *"), BERLIN).ending_in("2026-03-28T12:00Z", "2026-03-30T12:00Z"),
        [
            "2026-03-29T02:30 [2026-03-28T01:30Z, 2026-03-29T01:00Z)",
            "2026-03-30T02:30 [2026-03-29T01:00Z, 2026-03-30T00:30Z)",
        ]
    );
    // Santiago skips 00:00-01:00 on 2026-09-06.
    assert_eq!(
        check(cron("0 0 * * *"), chrono_tz::America::Santiago)
            .ending_in("2026-09-05T12:00Z", "2026-09-07T12:00Z"),
        [
            "2026-09-06T00:00 [2026-09-05T04:00Z, 2026-09-06T04:00Z)",
            "2026-09-07T00:00 [2026-09-06T04:00Z, 2026-09-07T03:00Z)",
        ]
    );
}

#[test]
fn cron_times_that_land_on_one_instant_fire_once_with_the_first_label() {
    // 02:00, 02:30 and 03:00 on 2026-03-08 in New York are all 07:00Z.
    let gap = check(cron("0,30 2,3 8 3 *"), NEW_YORK);
    assert_eq!(
        gap.ending_in("2026-03-08T00:00Z", "2026-03-08T08:00Z"),
        [
            "2026-03-08T02:00 [2025-03-08T08:30Z, 2026-03-08T07:00Z)",
            "2026-03-08T03:30 [2026-03-08T07:00Z, 2026-03-08T07:30Z)",
        ]
    );
    assert_eq!(
        gap.run_now("2026-03-08T07:10Z"),
        "2026-03-08T02:00 [2025-03-08T08:30Z, 2026-03-08T07:00Z)"
    );
}

#[test]
fn hourly_cron_gives_the_repeated_hour_to_the_next_period() {
    assert_eq!(
        check(cron("0 * * * *"), NEW_YORK).ending_in("2026-11-01T03:30Z", "2026-11-01T08:00Z"),
        [
            "2026-11-01T00:00 [2026-11-01T03:00Z, 2026-11-01T04:00Z)",
            "2026-11-01T01:00 [2026-11-01T04:00Z, 2026-11-01T05:00Z)",
            "2026-11-01T02:00 [2026-11-01T05:00Z, 2026-11-01T07:00Z)",
            "2026-11-01T03:00 [2026-11-01T07:00Z, 2026-11-01T08:00Z)",
        ]
    );
    // `after` in the second pass of the repeated hour (01:15 EST): 01:30 fired in
    // the first pass (05:30Z), so it is already behind.
    assert_eq!(
        check(cron("30 * * * *"), NEW_YORK).ending_in("2026-11-01T06:15Z", "2026-11-01T07:30Z"),
        ["2026-11-01T02:30 [2026-11-01T05:30Z, 2026-11-01T07:30Z)"]
    );
}

#[test]
fn cron_run_now_in_the_second_pass_of_a_repeated_hour() {
    // 06:45Z is 01:45 EST: 01:30 fired only in the first pass (05:30Z) and 02:30 EST
    // (07:30Z) is still ahead.
    assert_eq!(
        check(cron("30 * * * *"), NEW_YORK).run_now("2026-11-01T06:45Z"),
        "2026-11-01T01:30 [2026-11-01T04:30Z, 2026-11-01T05:30Z)"
    );
    // 06:15Z is 01:15 EST: 01:30 has fired (05:30Z) although 01:30 is after 01:15.
    assert_eq!(
        check(cron("30 1 * * *"), NEW_YORK).run_now("2026-11-01T06:15Z"),
        "2026-11-01T01:30 [2026-10-31T05:30Z, 2026-11-01T05:30Z)"
    );
}

#[test]
fn cron_labels_carry_seconds_only_when_the_expression_has_them() {
    assert_eq!(
        check(cron("15 30 2 * * *"), UTC).run_now("2026-03-08T03:00Z"),
        "2026-03-08T02:30:15 [2026-03-07T02:30:15Z, 2026-03-08T02:30:15Z)"
    );
    assert_eq!(
        check(cron("0 30 2 * * * 2026"), UTC).run_now("2026-03-08T03:00Z"),
        "2026-03-08T02:30 [2026-03-07T02:30Z, 2026-03-08T02:30Z)"
    );
}

#[test]
fn cron_weekdays_are_numbered_as_in_crontab() {
    // 2026-03-08 is a Sunday; the first runs are after its noon.
    let days = |expression: &str| -> Vec<String> {
        let runs = next_runs(
            &cron(expression),
            UTC,
            Duration::zero(),
            utc("2026-03-08T12:00Z"),
            3,
        );
        runs.iter().map(|t| t.format("%a %d").to_string()).collect()
    };
    assert_eq!(days("0 9 * * 1-5"), ["Mon 09", "Tue 10", "Wed 11"]);
    assert_eq!(days("0 9 * * mon-fri"), ["Mon 09", "Tue 10", "Wed 11"]);
    assert_eq!(days("0 9 * * 0"), ["Sun 15", "Sun 22", "Sun 29"]);
    assert_eq!(days("0 9 * * 7"), ["Sun 15", "Sun 22", "Sun 29"]);
    assert_eq!(days("0 9 * * 5-7"), ["Fri 13", "Sat 14", "Sun 15"]);
    assert_eq!(days("0 9 * * */3"), ["Wed 11", "Sat 14", "Sun 15"]);
    assert_eq!(days("0 0 9 * * 1,Wed"), ["Mon 09", "Wed 11", "Mon 16"]);
    assert_eq!(days("@weekly"), ["Sun 15", "Sun 22", "Sun 29"]);
}

#[test]
fn a_five_week_outage_catches_up_oldest_first_in_capped_batches() {
    let weekly = check(Cadence::Weekly, BERLIN);
    // `after` is the end of 2026-W01; `now` the Tuesday of 2026-W07; delay one hour.
    let (after, now) = ("2026-01-04T23:00Z", "2026-02-10T09:00Z");
    let all = weekly.due(1, after, now, 100);
    let labels: Vec<&str> = all.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        labels,
        ["2026-W02", "2026-W03", "2026-W04", "2026-W05", "2026-W06"]
    );
    assert_eq!(all[0].start, utc(after));
    for pair in all.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "periods tile time");
    }
    assert_eq!(all[4].due, utc("2026-02-09T00:00Z"));

    let first = weekly.due(1, after, now, 3);
    assert_eq!(first, all[..3]);
    let rest = weekly.due(1, &show_instant(first[2].end), now, 3);
    assert_eq!(rest, all[3..]);
    assert!(weekly.due(1, &show_instant(rest[1].end), now, 3).is_empty());
    assert!(weekly.due(1, after, now, 0).is_empty());
}

fn show_instant(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[test]
fn a_cron_outage_of_years_returns_the_oldest_periods() {
    let every_minute = check(cron("* * * * *"), BERLIN);
    let due = every_minute.due(0, "2020-01-01T00:00Z", "2026-01-01T00:00Z", 2);
    assert_eq!(
        due.iter().map(show).collect::<Vec<_>>(),
        [
            "2020-01-01T01:01 [2020-01-01T00:00Z, 2020-01-01T00:01Z)",
            "2020-01-01T01:02 [2020-01-01T00:01Z, 2020-01-01T00:02Z)",
        ]
    );
}

#[test]
fn a_new_schedule_first_exports_the_month_it_was_created_in() {
    let monthly = check(Cadence::Monthly, NEW_YORK);
    let created = "2026-03-15T10:00Z";
    assert_eq!(
        monthly.ending_in(created, "2026-04-01T03:59Z"),
        Vec::<String>::new()
    );
    assert_eq!(
        monthly.ending_in(created, "2026-04-01T04:00Z"),
        ["2026-03 [2026-03-01T05:00Z, 2026-04-01T04:00Z)"]
    );
}

#[test]
fn a_delay_holds_the_period_back() {
    let monthly = check(Cadence::Monthly, NEW_YORK);
    let after = "2026-03-15T10:00Z";
    // 00:30 EDT on 1 April: March has ended but is due only at 06:00 EDT.
    assert!(monthly.due(6, after, "2026-04-01T04:30Z", 10).is_empty());
    let due = monthly.due(6, after, "2026-04-01T10:00Z", 10);
    assert_eq!(
        due.iter().map(show).collect::<Vec<_>>(),
        ["2026-03 [2026-03-01T05:00Z, 2026-04-01T04:00Z)"]
    );
    assert_eq!(due[0].due, utc("2026-04-01T10:00Z"));
}

#[test]
fn next_runs_are_the_next_due_instants_in_the_schedule_timezone() {
    let monthly = check(Cadence::Monthly, BERLIN);
    assert_eq!(
        monthly.next_runs(1, "2026-03-15T12:00Z", 3),
        [
            "2026-04-01T01:00:00+02:00",
            "2026-05-01T01:00:00+02:00",
            "2026-06-01T01:00:00+02:00"
        ]
    );
    // Strictly after `now`: the run due exactly at `now` is not next.
    assert_eq!(
        monthly.next_runs(1, "2026-03-31T23:00Z", 1),
        ["2026-05-01T01:00:00+02:00"]
    );
    // The 2027 fire has no earlier fire, so it closes no period; then the years end.
    assert_eq!(
        check(cron("0 0 0 1 1 * 2027-2028"), UTC).next_runs(0, "2026-06-01T00:00Z", 3),
        ["2028-01-01T00:00:00+00:00"]
    );
}

fn render(template: &str, name: &str) -> Result<String, PeriodError> {
    let quarter = Period {
        label: "2026-Q1".to_string(),
        start: utc("2026-01-01T00:00Z"),
        end: utc("2026-04-01T00:00Z"),
        due: utc("2026-04-01T00:00Z"),
    };
    render_name(template, name, &quarter)
}

#[test]
fn render_name_fills_the_placeholders() {
    assert_eq!(
        render("{name}-{period}", "SOC2").as_deref(),
        Ok("SOC2-2026-Q1")
    );
    assert_eq!(
        render("evidence {period} ({name})", "ISO 27001").as_deref(),
        Ok("evidence 2026-Q1 (ISO 27001)")
    );
    assert_eq!(render("fixed", "SOC2").as_deref(), Ok("fixed"));
    assert_eq!(render("{name}", &"é".repeat(200)), Ok("é".repeat(200)));
}

#[test]
fn render_name_refuses_bad_templates_and_names() {
    let message =
        |template: &str, name: &str| render(template, name).expect_err("an error").to_string();
    assert_eq!(
        message("{name}-{quarter}", "SOC2"),
        "name template: unknown placeholder '{quarter}'; \
         the placeholders are {name} and {period}"
    );
    assert_eq!(
        message("{}", "SOC2"),
        "name template: unknown placeholder '{}'; the placeholders are {name} and {period}"
    );
    assert_eq!(
        message("é-{name", "SOC2"),
        "name template: unmatched '{' at character 3 of 'é-{name'"
    );
    assert_eq!(
        message("name}", "SOC2"),
        "name template: unmatched '}' at character 5 of 'name}'"
    );
    assert_eq!(
        message("{{name}}", "SOC2"),
        "name template: unmatched '{' at character 1 of '{{name}}'"
    );
    assert_eq!(render("{name}", ""), Err(PeriodError::EmptyName));
    assert_eq!(
        message("{name}-{period}", &"x".repeat(193)),
        "the export name is 201 characters long; at most 200 are allowed"
    );
    let forbidden = |template: &str, name: &str| match render(template, name) {
        Err(PeriodError::ForbiddenChar { found, .. }) => found,
        other => panic!("{template} with {name:?}: {other:?}"),
    };
    assert_eq!(forbidden("{name}", "a/b"), '/');
    assert_eq!(forbidden("{name}\\{period}", "a"), '\\');
    assert_eq!(forbidden("{name}", "a\nb"), '\n');
    assert_eq!(
        message("{name}", "a\u{7f}"),
        "the export name \"a\\u{7f}\" contains '\\u{7f}'; \
         control characters, '/' and '\\' are not allowed"
    );
}

#[test]
fn cadence_parse_round_trips_the_kind() {
    for kind in ["weekly", "monthly", "quarterly"] {
        assert_eq!(Cadence::parse(kind, None).map(|c| c.kind()), Ok(kind));
    }
    let Cadence::Cron(spec) = cron("  30 2 * * *  ") else {
        panic!("a cron cadence")
    };
    assert_eq!(spec.source(), "30 2 * * *");
    assert_eq!(Cadence::Cron(spec).kind(), "cron");
}

#[test]
fn cadence_parse_refuses_bad_input_by_name() {
    let message = |kind: &str, expression: Option<&str>| {
        Cadence::parse(kind, expression)
            .expect_err("an error")
            .to_string()
    };
    let cron = |expression: &str| message("cron", Some(expression));
    assert_eq!(
        message("daily", None),
        "schedule kind must be weekly, monthly, quarterly or cron, not 'daily'"
    );
    assert_eq!(
        message("Weekly", None),
        "schedule kind must be weekly, monthly, quarterly or cron, not 'Weekly'"
    );
    assert_eq!(
        message("cron", None),
        "schedule kind 'cron' needs a cron expression"
    );
    assert_eq!(
        message("monthly", Some("0 0 1 * *")),
        "a cron expression is only used with kind 'cron'; kind 'monthly' has fixed periods"
    );
    assert_eq!(
        cron("0 0 *"),
        "cron: expected 5 fields (minute hour day month weekday) or 6/7 with seconds/year, \
         got 3 in '0 0 *'"
    );
    assert_eq!(
        cron("0 0 0 0 * * * *"),
        "cron: expected 5 fields (minute hour day month weekday) or 6/7 with seconds/year, \
         got 8 in '0 0 0 0 * * * *'"
    );
    assert!(cron("61 0 * * *").starts_with("cron: invalid expression '61 0 * * *': "));
    assert!(cron("@fortnightly").starts_with("cron: invalid expression '@fortnightly': "));
    assert_eq!(
        cron("0 9 * * 8"),
        "cron: day of week '8' in '0 9 * * 8': \
         days are 0-7 (Sunday is 0 or 7) or names such as 'mon'"
    );
    assert_eq!(
        cron("0 9 * * 1,fri-mon"),
        "cron: day of week 'fri-mon' in '0 9 * * 1,fri-mon': a range must not run backwards \
         (Sunday is both 0 and 7, as in '5-7')"
    );
    assert_eq!(
        cron("0 9 * * 1/2"),
        "cron: day of week '1/2' in '0 9 * * 1/2': \
         a step needs '*' or a range before it, as in '1-5/2'"
    );
    assert_eq!(
        cron("0 9 * * */0"),
        "cron: day of week '*/0' in '0 9 * * */0': \
         the step after '/' must be a number from 1 to 7"
    );
    assert_eq!(
        cron("0 9 1 * mon"),
        "cron: '0 9 1 * mon' restricts both the day of month and the day of week, which cron \
         implementations read differently (either or both); \
         restrict only one and put '*' in the other"
    );
    assert_eq!(
        cron("0 0 30 2 *"),
        "cron: '0 0 30 2 *' never fires between 1970 and 2100"
    );
}
