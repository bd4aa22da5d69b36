//! Persons across restarts: what a restarted service finds of the persons it
//! stored (merged, split, and matched in the background) decides where new leads
//! go, exactly as before it stopped.

use roistat_leads::proto::SplitPersonRequest;

use crate::helpers::*;
use crate::persons::{get_lead, lead, lead_ids, person};

backend_tests!(
    merges_and_splits_decide_where_leads_go_after_a_restart,
    leads_stored_without_matching_join_the_persons_of_later_leads,
    a_stored_lead_between_split_persons_makes_its_keys_its_persons,
);

/// Splits the leads carrying `phone` off `person_id`; the new person's id.
async fn split_by_phone(app: &TestApp, person_id: u64, phone: &str) -> u64 {
    let split = app
        .grpc()
        .await
        .split_person(SplitPersonRequest {
            person_id,
            phone: phone.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    split.new_person.unwrap().person_id
}

/// The person the background match gives a lead stored without matching.
async fn matched_in_background(app: &TestApp, id: &str) -> u64 {
    within("the background match", async {
        loop {
            let lead = get_lead(app, id).await;
            if lead.person_id != 0 {
                return lead.person_id;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn merges_and_splits_decide_where_leads_go_after_a_restart(options: Options) {
    let app = TestApp::spawn_with(options.clone()).await;
    lead(&app, "a", "+79990001122", "olga@example.com").await;
    lead(&app, "b", "+79995550000", "").await;
    // Links the two: the later person is merged into the older.
    lead(&app, "c", "+79995550000", "olga@example.com").await;
    let kept = get_lead(&app, "a").await.person_id;
    assert_eq!(get_lead(&app, "c").await.person_id, kept);
    let new = split_by_phone(&app, kept, "+79995550000").await;
    assert_eq!(lead_ids(&person(&app, new).await), ["b", "c"]);

    let app = app.restart().await;
    // The e-mail's newest lead (c) moved to the new person: it stands for it.
    lead(&app, "d", "", "OLGA@example.com").await;
    assert_eq!(get_lead(&app, "d").await.person_id, new);
    lead(&app, "e", "8 999 000-11-22", "").await;
    let e = get_lead(&app, "e").await;
    assert_eq!((e.person_id, e.returning), (kept, true));
    // The two were split: a lead carrying both joins its phone's person, and
    // merges nothing.
    lead(&app, "f", "+79990001122", "olga@example.com").await;
    assert_eq!(get_lead(&app, "f").await.person_id, kept);
    // Now f is the e-mail's newest lead.
    lead(&app, "g", "", "olga@example.com").await;
    assert_eq!(get_lead(&app, "g").await.person_id, kept);
    // A number no stored lead carries starts a person.
    lead(&app, "h", "+79997770000", "").await;
    let h = get_lead(&app, "h").await;
    assert_eq!((h.person_id, h.returning), (h.sequence, false));
    assert_eq!(lead_ids(&person(&app, kept).await), ["a", "e", "f", "g"]);
    assert_eq!(lead_ids(&person(&app, new).await), ["b", "c", "d"]);
}

async fn leads_stored_without_matching_join_the_persons_of_later_leads(options: Options) {
    let off = options
        .clone()
        .env("ROISTAT_LEADS_PERSON_MATCHING", "false");
    let mut app = TestApp::spawn_with(off).await;
    lead(&app, "a", "+79990001122", "").await;
    lead(&app, "b", "+79990001122", "olga@example.com").await;
    let status = app.terminate().await;
    assert!(status.success(), "{status}");

    let app = TestApp::spawn_with(options.same_database()).await;
    // The background match gives the stored leads their person.
    let matched = matched_in_background(&app, "b").await;
    assert_eq!(get_lead(&app, "a").await.person_id, matched);
    lead(&app, "c", "", "Olga@Example.com").await;
    lead(&app, "d", "89990001122", "").await;
    for id in ["c", "d"] {
        let stored = get_lead(&app, id).await;
        assert_eq!(
            (stored.person_id, stored.returning),
            (matched, true),
            "{id}"
        );
    }
}

async fn a_stored_lead_between_split_persons_makes_its_keys_its_persons(options: Options) {
    let app = TestApp::spawn_with(options.clone()).await;
    lead(&app, "a", "+79990001122", "olga@example.com").await;
    lead(&app, "b", "+79995550000", "olga@example.com").await;
    lead(&app, "c", "+79995550000", "work@example.com").await;
    let kept = get_lead(&app, "a").await.person_id;
    let new = split_by_phone(&app, kept, "+79995550000").await;
    let mut app = app;
    let status = app.terminate().await;
    assert!(status.success(), "{status}");

    // Stored without matching: a's phone, and the e-mail only c (the new person)
    // carries.
    let off = options
        .same_database()
        .env("ROISTAT_LEADS_PERSON_MATCHING", "false");
    let mut app = TestApp::spawn_with(off).await;
    lead(&app, "x", "+79990001122", "work@example.com").await;
    let status = app.terminate().await;
    assert!(status.success(), "{status}");

    let app = TestApp::spawn_with(options.same_database()).await;
    let x = matched_in_background(&app, "x").await;
    // The two stay apart: x joins its phone's person, and is now the newest lead
    // carrying the e-mail, which stands for that person from then on.
    assert_eq!(x, kept);
    lead(&app, "y", "", "work@example.com").await;
    assert_eq!(get_lead(&app, "y").await.person_id, kept);
    assert_eq!(lead_ids(&person(&app, new).await), ["b", "c"]);
}
