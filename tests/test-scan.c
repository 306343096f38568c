/* The reader's scanner (lib/xml/scan.c): what it takes is what expat
 * takes, with the same tree; what it declines, expat still judges; and a
 * reader that scans behaves like one that does not (tests/scandiff.c does
 * the comparing). */
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "scandiff.h"
#include "xml/reader.h"
#include "xml/scan.h"

static const int level_choices[] = {0, 1, 2, 2 | XCM_XML_BARE_LAST, 3, 64};

/* Every context and tree depth: the scanner must take it and agree. */
static void expect_taken(const char *xml) {
  size_t c, l;

  for (c = 0; c < XCM_SCANDIFF_CONTEXTS; c++)
    for (l = 0; l < sizeof level_choices / sizeof level_choices[0]; l++) {
      int accepted = 0;
      const char *why = xcm_scandiff_element(xml, strlen(xml), (int)c,
                                             level_choices[l], &accepted);

      if (!CHECK(why == NULL) || !CHECK(accepted))
        xcm_test_note("input %s (context %zu, levels %d): %s", xml, c,
                      level_choices[l], why ? why : "declined");
    }
}

/* Declined, and a reader that scans still ends as one that does not. */
static void expect_declined(const char *xml) {
  static const unsigned char whole[] = {255}, bytes[] = {0, 2, 6};
  int accepted = 1;
  const char *why = xcm_scandiff_element(xml, strlen(xml), 0, 2, &accepted);

  if (!CHECK(why == NULL) || !CHECK(!accepted))
    xcm_test_note("input %s: %s", xml, why ? why : "taken");
  why = xcm_scandiff_stream(xml, strlen(xml), 0, 2, whole, 1, NULL);
  if (!CHECK(why == NULL))
    xcm_test_note("input %s whole: %s", xml, why);
  why = xcm_scandiff_stream(xml, strlen(xml), 1, 3, bytes, 3, NULL);
  if (!CHECK(why == NULL))
    xcm_test_note("input %s in pieces: %s", xml, why);
}

static void test_takes_everyday_stanzas(void) {
  expect_taken("<message to='bob@example.test/r' type='chat' id='m1'>"
               "<body>hi there</body></message>");
  expect_taken("<presence/>");
  expect_taken("<presence><show>away</show><status>out</status>"
               "<priority>5</priority></presence>");
  expect_taken("<iq type='result' id='r1' to='alice@example.test/cm'>"
               "<query xmlns='jabber:iq:roster'><item jid='bob@example.test'"
               " name='Bob' subscription='both'/></query></iq>");
  expect_taken("<route streamid=\"abc123\" from=\"example.test\" to=\"cm1\">"
               "<message xmlns=\"jabber:client\" to=\"a@b/c\"><body>x</body>"
               "</message></route>");
  expect_taken("<route streamid='s'>  \n<iq type='get' id='1'/>\n</route>");
  expect_taken("<a/>");
  expect_taken("<a\t/>");
  expect_taken("<a  b = \"1\"\nc='2' ></a >");
  expect_taken("<a xmlns=''/>");
  expect_taken("<a xmlns='urn:x'><b><c xmlns='urn:y'><d/></c></b></a>");
  expect_taken("<a xml:lang='en' lang='fr'/>");
  expect_taken("<a-b.c_d e-f='' _g=\"'\" h='\"'/>");
}

static void test_takes_text_as_expat_reports_it(void) {
  expect_taken("<m><body>&lt;b&gt; &amp; &quot;q&quot; &apos;a&apos;"
               "</body></m>");
  expect_taken("<m><body>&#65;&#x42;&#x1F600;&#9;&#10;&#13;</body></m>");
  expect_taken("<m><body>line\r\nnext\rlast\n</body></m>");
  expect_taken("<m><body>caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 "
               "\xef\xbf\xbd</body></m>");
  expect_taken("<m a='x&#10;y&#9;z' b='x\ny\tz\r\nw\rv' c='&lt;&amp;'/>");
  expect_taken("<m>mixed <b>bold</b> and <i>it</i> text ] ]] >x</m>");
  expect_taken("<m>\xe2\x80\x8f</m>");
}

static void test_declines_what_is_expats(void) {
  /* Outside the subset: the reader refuses these as restricted XML. */
  expect_declined("<m><!-- note --></m>");
  expect_declined("<m><?pi x?></m>");
  /* Outside the subset, but well-formed: expat takes these. */
  expect_declined("<m><![CDATA[x]]></m>");
  expect_declined("<stream:error><x/></stream:error>");
  expect_declined("<m xmlns:p='urn:p'><p:x/></m>");
  expect_declined("<m db:a='1'/>");
  expect_declined("<m xmlns='&#65;'/>");
  expect_declined("<m xmlns='a b'/>");
  expect_declined("<m>\xc3\xa9<\xc3\xa9/></m>");
  /* Not well-formed: expat refuses these with its own message. */
  expect_declined("<m><!DOCTYPE m></m>");
  expect_declined("<m a='1' a='2'/>");
  expect_declined("<m xml:lang='a' xml:lang='b'/>");
  expect_declined("<m a='1'b='2'/>");
  expect_declined("<m a=1/>");
  expect_declined("<m a='<'/>");
  expect_declined("<m>&foo;</m>");
  expect_declined("<m>&#0;</m>");
  expect_declined("<m>&#xD800;</m>");
  expect_declined("<m>&#x110000;</m>");
  expect_declined("<m>&#xFFFE;</m>");
  expect_declined("<m>&#X41;</m>");
  expect_declined("<m>&#;</m>");
  expect_declined("<m>&amp</m>");
  expect_declined("<m>a]]>b</m>");
  expect_declined("<m>\x01</m>");
  expect_declined("<m>\x80</m>");
  expect_declined("<m>\xc0\xaf</m>");
  expect_declined("<m>\xed\xa0\x80</m>");
  expect_declined("<m>\xef\xbf\xbe</m>");
  expect_declined("<m>\xf4\x90\x80\x80</m>");
  expect_declined("<m>\xe2\x82</m>");
  expect_declined("<m></n>");
  expect_declined("<m><n></m></n>");
  expect_declined("<m></mm>");
  expect_declined("<1m/>");
  expect_declined("<m xmlns='http://www.w3.org/XML/1998/namespace'/>");
  expect_declined("<m xmlns='http://www.w3.org/2000/xmlns/'/>");
  expect_declined("<xmlns/>");
  expect_declined("<m xmlnsx='1'/>");
  expect_declined("<m xml:='1'/>");
  expect_declined("< m/>");
  expect_declined("<m/ >");
}

static void test_declines_what_is_unfinished_or_too_big(void) {
  char big[9000], deep[400];
  size_t i, n = 0;

  expect_declined("<m><body>hi</body>");
  expect_declined("<m a='1");
  expect_declined("<m");
  expect_declined("<");
  /* The stanza limit in scandiff.c is 8192 bytes, the depth 16. */
  memcpy(big, "<m>", 3);
  memset(big + 3, 'x', sizeof big - 8);
  memcpy(big + sizeof big - 5, "</m>", 5);
  expect_declined(big);
  for (i = 0; i < 17; i++)
    n += (size_t)snprintf(deep + n, sizeof deep - n, "<d%zu>", i);
  for (i = 17; i-- > 0;)
    n += (size_t)snprintf(deep + n, sizeof deep - n, "</d%zu>", i);
  expect_declined(deep);
}

/* Whether the scanner declines xml as cut off (1), otherwise (0), or
 * takes it (-1); within the limits of tests/scandiff.c. */
static int incomplete(const char *xml) {
  xcm_xml_scan *sc;
  int r;

  REQUIRE(xcm__xml_scan_new(&sc, NULL) == 0);
  r = xcm__xml_scan_element(sc, xml, strlen(xml), 8192, 16) != 0
          ? -1
          : xcm__xml_scan_incomplete(sc);
  xcm__xml_scan_free(sc);
  return r;
}

/* Cut off is told from declined: only bytes that more bytes could make a
 * subset element, and that expat could not refuse yet. (Every prefix of
 * every element taken above is checked by tests/scandiff.c.) */
static void test_tells_cut_off_from_declined(void) {
  static const char *const cut[] = {
      "<",
      "<m",
      "<m ",
      "<m a",
      "<m a:",
      "<m a =",
      "<m a='",
      "<m a='x&",
      "<m a='&#",
      "<m a='&#x1F",
      "<m a='&qu",
      "<m/",
      "<m>",
      "<m>]",
      "<m>]]",
      "<m>x]",
      "<m>x]]]]",
      "<m>\xc3",
      "<m>\xe2\x82",
      "<m>\xf0\x9f\x98",
      "<m><",
      "<m></",
      "<m></m",
      "<mm></m",
      "<m></m ",
      "<m><n/><o>x</o",
      "<m xmln",
      "<xmln",
      "<m>&#1234567",
      "<m>&am",
      "<m a='1' a",
  };
  static const char *const declined[] = {
      /* A byte expat refuses at once, right after a ']' (fuzz-scan). */
      "<m>x]\x01",
      "<m>x]]]\x01",
      "<m>x]a\x01",
      "<m a='1' a=",
      "<m a='1'b",
      "<m>&#123456789",
      "<m>&bogus",
      "<m>&#X41",
      "<m>\xc0",
      "<m>\xc3\x28",
      "<m>\xf5\x80",
      "<m>\xe2\x82\x28",
      "<m></n",
      "<m></mx",
      "<m><!--",
      "<m><![CDATA[",
      "<m xmlns:p='u'",
      "<p:m",
      "<m>\x01",
      "<m a='<'",
      "<m a=1",
      " <m",
      "</m",
      "<1",
      "<m>]]>",
  };
  static const char *const cut_headers[] = {
      "",
      " \n",
      "<",
      "<?",
      "<?xml",
      "<?xml ",
      "<?xml ver",
      "<?xml version = \"1.",
      "<?xml version='1.0",
      "<?xml version='1.0' enc",
      "<?xml version='1.0' encoding='UT",
      "<?xml version='1.0' encoding='utf-8'",
      "<?xml version='1.0'?",
      "<?xml version='1.0'?>\n",
      "<s",
      "<s:",
      "<s:st",
      "<s:st xmlns:s='urn:s",
      "<s ",
      "<s xml:lang='e",
  };
  static const char *const declined_headers[] = {
      "<?xmlv",
      "<?xml version='2",
      "<?xml version='1.0' encoding='lat",
      "<?xml version='1.0' standalone",
      "<?xml version='1.0'?x",
      " <?x",
      "<s/",
      "<xml",
      "<s:1",
      "\xef\xbb\xbf<s",
      "<!DOCTYPE",
  };
  xcm_xml_nsdecl decls[16];
  xcm_xml_header h;
  xcm_xml_scan *sc;
  const char *qname;
  char big[9000];
  size_t i;

  REQUIRE(xcm__xml_scan_new(&sc, NULL) == 0);
  for (i = 0; i < sizeof cut_headers / sizeof cut_headers[0]; i++) {
    const char *x = cut_headers[i];

    CHECK_INT(
        xcm__xml_scan_header(sc, x, strlen(x), 8192, &h, decls, 16, &qname), 0);
    if (!CHECK_INT(xcm__xml_scan_incomplete(sc), 1))
      xcm_test_note("cut-off header: %s", x);
  }
  for (i = 0; i < sizeof declined_headers / sizeof declined_headers[0]; i++) {
    const char *x = declined_headers[i];

    CHECK_INT(
        xcm__xml_scan_header(sc, x, strlen(x), 8192, &h, decls, 16, &qname), 0);
    if (!CHECK_INT(xcm__xml_scan_incomplete(sc), 0))
      xcm_test_note("declined header: %s", x);
  }
  xcm__xml_scan_free(sc);

  for (i = 0; i < sizeof cut / sizeof cut[0]; i++)
    if (!CHECK_INT(incomplete(cut[i]), 1))
      xcm_test_note("cut off: %s", cut[i]);
  for (i = 0; i < sizeof declined / sizeof declined[0]; i++)
    if (!CHECK_INT(incomplete(declined[i]), 0))
      xcm_test_note("declined: %s", declined[i]);
  /* Cut off past the stanza limit: no use waiting. */
  memcpy(big, "<m>", 3);
  memset(big + 3, 'x', sizeof big - 4);
  big[sizeof big - 1] = '\0';
  CHECK_INT(incomplete(big), 0);
  big[8192] = '\0';
  CHECK_INT(incomplete(big), 1);
}

/* Long runs are skipped 16 bytes at a time: put each kind of byte that
 * needs a look at every offset of a 48-byte run, in text and in an
 * attribute value. */
static void test_runs_with_something_at_every_offset(void) {
  static const char *const fine[] = {
      "\t",       "\n", "\r", "\r\n", "&amp;", "&#x20AC;",
      "\xc3\xa9", "]",  "\"", "'",    ">",     "\xf0\x9f\x98\x80"};
  static const char *const bad[] = {"\x01", "\x7f\x80", "\xc3",
                                    "<",    "&x;",      "\xff"};
  char run[64], xml[256];
  size_t k, at;

  for (k = 0; k < sizeof fine / sizeof fine[0]; k++)
    for (at = 0; at < 48; at++) {
      memset(run, 'x', sizeof run);
      memcpy(run + at, fine[k], strlen(fine[k]));
      run[48 + strlen(fine[k])] = '\0';
      /* In a '...' value, so a ' run goes in the text only. */
      snprintf(xml, sizeof xml, "<m a='%s' b=\"x\"><b>%s</b></m>",
               fine[k][0] == '\'' ? "q" : run, run);
      expect_taken(xml);
    }
  for (k = 0; k < sizeof bad / sizeof bad[0]; k++)
    for (at = 0; at < 48; at++) {
      memset(run, 'x', sizeof run);
      memcpy(run + at, bad[k], strlen(bad[k]));
      run[48 + strlen(bad[k])] = '\0';
      if (bad[k][0] != '<') {
        snprintf(xml, sizeof xml, "<m><b>%s</b></m>", run);
        expect_declined(xml);
      }
      snprintf(xml, sizeof xml, "<m a='%s'/>", run);
      expect_declined(xml);
    }
}

/* A stream mixing what the scanner takes and what it declines, split
 * every way: the same events, and the scanner does most of the work. */
static void test_stream_switches_between_scanner_and_expat(void) {
  static const char body[] =
      "<route streamid='a'><message xmlns='jabber:client' to='b@x/r'>"
      "<body>one</body></message></route>\n"
      "<iq type='result' id='c1'/>"
      "<route streamid='b'><message xmlns='jabber:client'><body>two &amp; "
      "three</body><p:x xmlns:p='urn:p'/></message></route>"
      "<route streamid='c'><presence xmlns='jabber:client'/></route>   "
      "<stream:features><x/></stream:features>"
      "<route streamid='d'><iq xmlns='jabber:client' type='get' id='2'>"
      "<query xmlns='jabber:iq:version'/></iq></route>"
      "<route streamid='e'>text</route>";
  unsigned char splits[8];
  size_t scanned = 0, i, k;
  const char *why;

  why = xcm_scandiff_stream(body, sizeof body - 1, 1, 2 | XCM_XML_BARE_LAST,
                            NULL, 0, &scanned);
  CHECK(why == NULL);
  /* Declined: b and the features, for their prefixes. */
  CHECK_INT(scanned, 5);
  for (k = 0; k < 200; k++) {
    for (i = 0; i < sizeof splits; i++)
      splits[i] = (unsigned char)(xcm_test_rand() % (k < 100 ? 8 : 200));
    why =
        xcm_scandiff_stream(body, sizeof body - 1, (int)(k % 4),
                            level_choices[k % 6], splits, sizeof splits, NULL);
    if (!CHECK(why == NULL)) {
      xcm_test_note("split round %zu: %s", k, why);
      break;
    }
  }
}

/* Restarts, the end tag and errors after scanned stanzas. */
static void test_stream_events_after_scanning(void) {
  static const char *const streams[] = {
      "<a/><success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
      "<stream:stream xmlns='jabber:client' "
      "xmlns:stream='http://etherx.jabber.org/streams'><b/>",
      "<a/><b/></stream:stream><c/>",
      "<a/><b/>stray text<c/>",
      "<a/><b></c><d/>",
      "<a/><b/><!DOCTYPE x><c/>",
      "<a/><b>&unknown;</b>",
  };
  static const unsigned char splits[] = {0, 1, 3, 255};
  size_t i, c;

  for (i = 0; i < sizeof streams / sizeof streams[0]; i++)
    for (c = 0; c < XCM_SCANDIFF_CONTEXTS; c++) {
      const char *why =
          xcm_scandiff_stream(streams[i], strlen(streams[i]), (int)c, 2, splits,
                              sizeof splits, NULL);
      if (!CHECK(why == NULL))
        xcm_test_note("stream %zu: %s", i, why);
      why = xcm_scandiff_stream(streams[i], strlen(streams[i]), (int)c, 2, NULL,
                                0, NULL);
      if (!CHECK(why == NULL))
        xcm_test_note("stream %zu whole: %s", i, why);
    }
}

/* Stream headers: taken (counted) or declined, the same events either
 * way, whole and split. */
static void header_case(const char *head, int taken) {
  static const unsigned char splits[][4] = {
      {255, 255, 255, 255}, {0, 0, 0, 0}, {4, 30, 1, 90}};
  char doc[1024];
  size_t scanned = 0, i;
  const char *why;

  snprintf(doc, sizeof doc, "%s<message to='a@b'><body>x</body></message>",
           head);
  why = xcm_scandiff_stream(doc, strlen(doc), 4, 2, NULL, 0, &scanned);
  if (!CHECK(why == NULL) || !CHECK_INT(scanned, taken ? 2 : 0))
    xcm_test_note("header %s: %s", head, why ? why : "count");
  for (i = 0; i < sizeof splits / sizeof splits[0]; i++) {
    why = xcm_scandiff_stream(doc, strlen(doc), 4, 2, splits[i], 4, NULL);
    if (!CHECK(why == NULL))
      xcm_test_note("header %s, splits %zu: %s", head, i, why);
  }
}

static void test_stream_headers(void) {
  static const char std[] = "xmlns='jabber:client' "
                            "xmlns:stream='http://etherx.jabber.org/streams'";
  char h[512];
  size_t i, n;

  snprintf(h, sizeof h,
           "<?xml version='1.0'?><stream:stream %s to='example.test' "
           "version='1.0' xml:lang='en'>",
           std);
  header_case(h, 1);
  header_case("<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n<stream:stream "
              "xmlns:stream=\"http://etherx.jabber.org/streams\" "
              "xmlns=\"jabber:connectionmanager\" id=\"x&amp;y\">",
              1);
  header_case("  <stream xmlns='urn:x'>", 1);
  header_case("<s:s xmlns:s='urn:s'>", 1);
  header_case("<stream:stream\txmlns:stream = 'urn:s' a='1'\r\n>", 1);
  /* Declined: expat decides, and the events still agree. */
  snprintf(h, sizeof h,
           "<?xml version='1.0' standalone='yes'?>"
           "<stream:stream %s>",
           std);
  header_case(h, 0);
  snprintf(h, sizeof h,
           "<?xml version='1.0' encoding='UTF-16'?><stream:stream %s>", std);
  header_case(h, 0);
  snprintf(h, sizeof h, " <?xml version='1.0'?><stream:stream %s>", std);
  header_case(h, 0);
  header_case("<?xml version='1.1'?><s xmlns='urn:x'>", 0);
  header_case("<stream:stream xmlns='jabber:client'>", 0);
  header_case("<stream:stream xmlns:stream=''>", 0);
  header_case("<s xmlns:db='jabber:server:dialback' db:x='1'>", 0);
  header_case("<s a='1' a='2'>", 0);
  header_case("<s xmlns:xml='http://www.w3.org/XML/1998/namespace'>", 0);
  header_case("<xmls>", 0);
  header_case("<s:s xmlns:s='urn:s' xmlns:s='urn:t'>", 0);
  header_case("\xef\xbb\xbf<s xmlns='urn:x'>", 0);
  header_case("<!DOCTYPE s><s>", 0);
  n = (size_t)snprintf(h, sizeof h, "<s");
  for (i = 0; i < 17; i++)
    n += (size_t)snprintf(h + n, sizeof h - n, " xmlns:p%zu='urn:%zu'", i, i);
  snprintf(h + n, sizeof h - n, ">");
  header_case(h, 0);
}

int main(int argc, char **argv) {
  static const xcm_test tests[] = {
      {"takes_everyday_stanzas", test_takes_everyday_stanzas},
      {"takes_text_as_expat_reports_it", test_takes_text_as_expat_reports_it},
      {"declines_what_is_expats", test_declines_what_is_expats},
      {"declines_what_is_unfinished_or_too_big",
       test_declines_what_is_unfinished_or_too_big},
      {"tells_cut_off_from_declined", test_tells_cut_off_from_declined},
      {"runs_with_something_at_every_offset",
       test_runs_with_something_at_every_offset},
      {"stream_switches_between_scanner_and_expat",
       test_stream_switches_between_scanner_and_expat},
      {"stream_events_after_scanning", test_stream_events_after_scanning},
      {"stream_headers", test_stream_headers},
  };
  return xcm_test_main(argc, argv, XCM_TESTS(tests));
}
